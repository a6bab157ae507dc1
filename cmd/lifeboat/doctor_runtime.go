package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// loadedConfigPath asks the containerd at socket which config_path it
// loaded: containerd reads it only at start, so a config file changed since
// then is not in effect. containerd 1.x says it in CRI Status's verbose info
// (config.registry.configPath); 2.x's CRI config there has no registry, and
// its images plugin exports RegistryConfigPath through the introspection
// service instead. It also returns containerd's version.
func loadedConfigPath(ctx context.Context, socket string) (configPath, version string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	rs := runtime.NewRuntimeServiceClient(conn)
	v, err := rs.Version(ctx, &runtime.VersionRequest{})
	if err != nil {
		return "", "", fmt.Errorf("CRI Version: %w", err)
	}
	version = v.GetRuntimeName() + " " + v.GetRuntimeVersion()
	st, err := rs.Status(ctx, &runtime.StatusRequest{Verbose: true})
	if err != nil {
		return "", version, fmt.Errorf("CRI Status: %w", err)
	}
	var cfg struct {
		Registry *struct {
			ConfigPath string `json:"configPath"`
		} `json:"registry"`
	}
	if raw := st.GetInfo()["config"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			return "", version, fmt.Errorf("CRI Status config: %w", err)
		}
	}
	if cfg.Registry != nil {
		return cfg.Registry.ConfigPath, version, nil
	}
	exports, err := pluginExports(ctx, conn, "io.containerd.cri.v1", "images")
	if err != nil {
		return "", version, fmt.Errorf("introspection: %w", err)
	}
	p, ok := exports["RegistryConfigPath"]
	if !ok {
		return "", version, errors.New("containerd says nothing of its config_path (neither CRI Status nor its images plugin)")
	}
	return p, version, nil
}

// pluginExports calls containerd's Introspection.Plugins for one plugin and
// returns its exports. The two messages are encoded by hand, which spares
// the binary containerd's API module for two fields: PluginsRequest{1:
// filters}, PluginsResponse{1: plugins}, Plugin{1: type, 2: id, 5:
// exports map<string,string>}.
func pluginExports(ctx context.Context, conn *grpc.ClientConn, typ, id string) (map[string]string, error) {
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendString(req, fmt.Sprintf("type==%s,id==%s", typ, id))
	var resp []byte
	err := conn.Invoke(ctx, "/containerd.services.introspection.v1.Introspection/Plugins", &req, &resp, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return nil, err
	}
	for _, plugin := range fields(resp, 1) {
		if string(first(fields(plugin, 1))) != typ || string(first(fields(plugin, 2))) != id {
			continue
		}
		exports := map[string]string{}
		for _, kv := range fields(plugin, 5) {
			exports[string(first(fields(kv, 1)))] = string(first(fields(kv, 2)))
		}
		return exports, nil
	}
	return nil, fmt.Errorf("no plugin %s.%s", typ, id)
}

// fields are the length-delimited values of field num in a message.
func fields(b []byte, num protowire.Number) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return out
		}
		b = b[l:]
		if typ == protowire.BytesType && n == num {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return out
			}
			out = append(out, v)
			b = b[l:]
			continue
		}
		if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return out
		}
		b = b[l:]
	}
	return out
}

func first(v [][]byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return v[0]
}

// rawCodec passes already-encoded protobuf bytes through gRPC.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// sameDir compares two config_path values as directories.
func sameDir(a, b string) bool { return filepath.Clean(a) == filepath.Clean(b) }

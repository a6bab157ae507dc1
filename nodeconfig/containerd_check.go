package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pelletier/go-toml/v2"
)

// containerd2DefaultConfigPath is what containerd 2.x uses on Linux when
// config_path is unset. Its CRI pulls go through the transfer service,
// which takes config_path as one directory, so this list finds nothing.
const containerd2DefaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"

// CheckContainerdConfig warns when containerd, configured by the file at
// path, will not read the hosts.toml files in hostsDir: config_path unset,
// pointing elsewhere, or a colon-separated list (containerd 2.x pulls ignore
// every hosts.toml then). It never fails: what it cannot check, it says.
// Each warning is one line.
func CheckContainerdConfig(path, hostsDir string) []string {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{fmt.Sprintf("containerd config %s does not exist, so containerd's defaults apply: 1.x reads no hosts.toml at all, "+
			"and 2.x's default config_path %q is a list its CRI pulls ignore; create it setting config_path = %q (see the README) and restart containerd",
			path, containerd2DefaultConfigPath, hostsDir)}
	}
	if err != nil {
		return []string{fmt.Sprintf("cannot check containerd's config_path: %v", err)}
	}
	cfg, plugin, table, onlyV2, err := parseContainerdConfig(raw)
	if err != nil {
		return []string{fmt.Sprintf("cannot check containerd's config_path: %s: %v", path, err)}
	}
	v, found := lookup(cfg, "plugins", plugin, "registry", "config_path")
	if !found {
		if onlyV2 {
			return []string{fmt.Sprintf("%s: config_path is not set in %s, so containerd 2.x uses %q, a list its CRI pulls ignore: "+
				"set config_path = %q there and restart containerd", path, table, containerd2DefaultConfigPath, hostsDir)}
		}
		return []string{fmt.Sprintf("%s: config_path is not set in %s, so containerd reads no hosts.toml "+
			"(1.x: none at all; 2.x: only a list its CRI pulls ignore): set config_path = %q there and restart containerd", path, table, hostsDir)}
	}
	configPath, ok := v.(string)
	if !ok {
		return []string{fmt.Sprintf("%s: config_path in %s is not a string", path, table)}
	}

	var warnings []string
	dirs := filepath.SplitList(configPath)
	found = false
	for _, d := range dirs {
		found = found || filepath.Clean(d) == filepath.Clean(hostsDir)
	}
	if !found {
		warnings = append(warnings, fmt.Sprintf("%s: config_path is %q, not --hosts-dir %q: containerd will not read the files written here",
			path, configPath, hostsDir))
	}
	localPull, _ := lookup(cfg, "plugins", plugin, "use_local_image_pull")
	if len(dirs) > 1 && localPull != true {
		who := "containerd 2.x (which also reads this version of the config)"
		if onlyV2 {
			who = "containerd 2.x"
		}
		warnings = append(warnings, fmt.Sprintf("%s: config_path %q is a colon-separated list: %s pulls through its transfer service, "+
			"which takes a single directory, so it ignores every hosts.toml and lifeboat with them; set config_path = %q",
			path, configPath, who, hostsDir))
	}
	return warnings
}

// parseContainerdConfig decodes a containerd config and says where its
// config_path lives, which depends on the config's version: 1 and 2 are
// containerd 1.x's formats (2.x migrates a version 2 file on load), 3 and
// later are 2.x's (onlyV2).
func parseContainerdConfig(raw []byte) (cfg map[string]any, plugin, table string, onlyV2 bool, err error) {
	if err := toml.Unmarshal(raw, &cfg); err != nil {
		return nil, "", "", false, tomlError(err)
	}
	version, _ := cfg["version"].(int64)
	plugin = "io.containerd.grpc.v1.cri"
	switch {
	case version >= 3:
		plugin, onlyV2 = "io.containerd.cri.v1.images", true
	case version < 2:
		plugin = "cri"
	}
	table = fmt.Sprintf("[plugins.%q.registry]", plugin)
	if plugin == "cri" {
		table = "[plugins.cri.registry]"
	}
	return cfg, plugin, table, onlyV2, nil
}

// ContainerdConfigPath is the config_path containerd's config file at path
// sets ("" when unset), to compare with what a running containerd loaded.
func ContainerdConfigPath(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	cfg, plugin, _, _, err := parseContainerdConfig(raw)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	v, _ := lookup(cfg, "plugins", plugin, "registry", "config_path")
	s, _ := v.(string)
	return s, nil
}

// lookup walks nested TOML tables.
func lookup(m map[string]any, keys ...string) (any, bool) {
	var v any = m
	for _, k := range keys {
		t, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = t[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

package credentials

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	clicreds "github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/docker/docker-credential-helpers/client"
	helpercreds "github.com/docker/docker-credential-helpers/credentials"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHubAuthKey is the key docker writes Docker Hub's credentials under.
const dockerHubAuthKey = "https://index.docker.io/v1/"

// dockerConfig is a docker config file, parsed by docker/cli, read again
// when its content changes (a Kubernetes Secret volume is updated in
// place, by a symlink swap): at most every checkEvery, on use.
type dockerConfig struct {
	path       string
	timeout    time.Duration
	checkEvery time.Duration
	now        func() time.Time
	log        *slog.Logger
	metrics    *metrics
	changed    func()

	nextCheck atomic.Int64 // unix ns: no read before then
	mu        sync.Mutex   // one reload at a time
	cur       atomic.Pointer[configfile.ConfigFile]
	sum       [sha256.Size]byte
}

func newDockerConfig(opts Options, m *metrics, changed func()) (*dockerConfig, error) {
	d := &dockerConfig{
		path: opts.DockerConfig, timeout: opts.Timeout, checkEvery: opts.CheckEvery,
		now: opts.Now, log: opts.Logger, metrics: m, changed: changed,
	}
	raw, err := os.ReadFile(d.path)
	if err != nil {
		return nil, fmt.Errorf("read docker config: %w", err)
	}
	cf, err := parseDockerConfig(d.path, raw)
	if err != nil {
		return nil, err
	}
	d.cur.Store(cf)
	d.sum = sha256.Sum256(raw)
	d.nextCheck.Store(d.now().Add(d.checkEvery).UnixNano())
	return d, nil
}

// parseDockerConfig parses a config with docker/cli, which also decodes
// the base64 "auth" of each entry.
func parseDockerConfig(path string, raw []byte) (*configfile.ConfigFile, error) {
	cf := configfile.New(path)
	if err := cf.LoadFromReader(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("parse docker config %s: %w", path, err)
	}
	return cf, nil
}

// maybeReload reads the file again if checkEvery has passed, and swaps in
// its content if it changed and parses. A file that is gone or broken
// keeps the previous content (a Secret being rewritten), logged.
func (d *dockerConfig) maybeReload() {
	now := d.now()
	if now.UnixNano() < d.nextCheck.Load() || !d.mu.TryLock() {
		return
	}
	defer d.mu.Unlock()
	if now.UnixNano() < d.nextCheck.Load() {
		return
	}
	d.nextCheck.Store(now.Add(d.checkEvery).UnixNano())
	raw, err := os.ReadFile(d.path)
	if err == nil && sha256.Sum256(raw) == d.sum {
		return
	}
	var cf *configfile.ConfigFile
	if err == nil {
		cf, err = parseDockerConfig(d.path, raw)
	}
	if err != nil {
		d.metrics.reloads.WithLabelValues(resultError).Inc()
		d.log.Warn("docker config changed but cannot be used; keeping the previous one", "file", d.path, "error", err)
		return
	}
	d.sum = sha256.Sum256(raw)
	d.cur.Store(cf)
	d.metrics.reloads.WithLabelValues(resultOK).Inc()
	d.log.Info("docker config changed: using the new credentials", "file", d.path)
	d.changed()
}

// lookup finds credentials for target's registry: its credential helper
// (credHelpers, else credsStore), then its auths entry.
func (d *dockerConfig) lookup(ctx context.Context, target authn.Resource) (authn.AuthConfig, bool, error) {
	d.maybeReload()
	cf := d.cur.Load()
	registry := target.RegistryStr()
	key := registry
	if registry == name.DefaultRegistry || registry == "docker.io" || registry == "registry-1.docker.io" {
		key = dockerHubAuthKey
	}
	if helper := helperFor(cf, key, registry); helper != "" {
		ac, found, err := d.runHelper(ctx, helper, key)
		if err != nil || found {
			return ac, found, err
		}
	}
	// docker/cli's file store: the exact key, or a key that is a URL of
	// the same host ("https://registry.example/v1/").
	ac, err := clicreds.NewFileStore(cf).Get(key)
	if err != nil {
		return authn.AuthConfig{}, false, err
	}
	if !isEmpty(ac) {
		return toAuthn(ac), true, nil
	}
	// Pull secrets also name Docker Hub "docker.io" or "index.docker.io".
	for k, ac := range cf.GetAuthConfigs() {
		if sameRegistry(k, registry) && !isEmpty(ac) {
			return toAuthn(ac), true, nil
		}
	}
	return authn.AuthConfig{}, false, nil
}

func helperFor(cf *configfile.ConfigFile, keys ...string) string {
	for _, k := range keys {
		if h, ok := cf.CredentialHelpers[k]; ok {
			return h
		}
	}
	return cf.CredentialsStore
}

// sameRegistry reports whether an auths key names registry, once both are
// reduced to the host a registry name resolves to.
func sameRegistry(key, registry string) bool {
	host := clicreds.ConvertToHostname(key)
	r, err := name.NewRegistry(host)
	return err == nil && r.RegistryStr() == registry
}

func isEmpty(ac types.AuthConfig) bool {
	return ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" && ac.Auth == ""
}

func toAuthn(ac types.AuthConfig) authn.AuthConfig {
	return authn.AuthConfig{
		Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
	}
}

// tokenUsername is what a helper answers as the username of an identity
// token (docker/cli's convention).
const tokenUsername = "<token>"

// runHelper runs docker-credential-<helper> get with the protocol client of
// docker-credential-helpers. docker/cli's own native store runs helpers
// with no time limit; this is the same exchange with one.
func (d *dockerConfig) runHelper(ctx context.Context, helper, serverURL string) (authn.AuthConfig, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	prog := "docker-credential-" + helper
	creds, err := client.Get(func(args ...string) client.Program {
		return &helperProgram{ctx: ctx, name: prog, args: args}
	}, serverURL)
	switch {
	case helpercreds.IsErrCredentialsNotFound(err):
		d.metrics.calls.WithLabelValues("helper", helper, resultNotFound).Inc()
		return authn.AuthConfig{}, false, nil
	case err != nil:
		// client.Get flattens the cause into text: ask the context.
		ce := &callError{kind: "helper", name: prog, err: err}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			ce.timeout, ce.err = d.timeout, ctx.Err()
		}
		d.metrics.calls.WithLabelValues("helper", helper, resultOf(ce.err)).Inc()
		return authn.AuthConfig{}, false, ce
	}
	d.metrics.calls.WithLabelValues("helper", helper, resultOK).Inc()
	if creds.Username == tokenUsername {
		return authn.AuthConfig{IdentityToken: creds.Secret}, true, nil
	}
	return authn.AuthConfig{Username: creds.Username, Password: creds.Secret}, creds.Username != "" || creds.Secret != "", nil
}

// helperProgram is a client.Program run on a context. Output returns what
// the helper printed on stdout, which is also where helpers put their
// error messages ("credentials not found in native keychain").
type helperProgram struct {
	ctx  context.Context
	name string
	args []string
	in   io.Reader
}

func (p *helperProgram) Input(in io.Reader) { p.in = in }

func (p *helperProgram) Output() ([]byte, error) {
	path, err := lookPath(p.name)
	if err != nil {
		return nil, err
	}
	return run(p.ctx, path, p.args, os.Environ(), p.in)
}

// lookPath finds a helper on PATH, as docker does.
func lookPath(prog string) (string, error) {
	if strings.ContainsAny(prog, `/\`) {
		return "", fmt.Errorf("invalid credential helper name %q", prog)
	}
	return exec.LookPath(prog)
}

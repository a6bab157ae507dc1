// Package credentials is where lifeboat's own registry credentials come
// from: the node's kubelet credential provider plugins (the node's cloud
// identity: ECR, Artifact Registry, ACR), a docker config (auths,
// credHelpers, credsStore) re-read when it changes, or none (anonymous).
// A Keychain asks them in that order and hands go-containerregistry an
// authn.Authenticator.
//
// Every plugin and helper runs with a timeout; a failing or hanging one is
// an error from Resolve, which the upstream client classifies as
// auth-unavailable (cached content is then served stale, a miss fails).
// No credential is ever logged or put in an error.
package credentials

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTimeout bounds one plugin or helper call when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// DefaultCheckEvery is how often, at most, the docker config file is read
// again to see whether it changed, when Options.CheckEvery is zero.
const DefaultCheckEvery = 10 * time.Second

// Options say where credentials come from. The zero value is a keychain
// that is always anonymous.
type Options struct {
	// ProviderConfig is a kubelet CredentialProviderConfig file
	// (kubelet.config.k8s.io/v1, v1beta1 or v1alpha1). Empty: no plugins.
	ProviderConfig string
	// ProviderBinDir holds the plugins' executables, named as the
	// providers. Required with ProviderConfig.
	ProviderBinDir string
	// DockerConfig is a docker config.json or .dockerconfigjson file.
	// Empty: none.
	DockerConfig string
	// Timeout bounds each plugin and credential helper call. Zero:
	// DefaultTimeout.
	Timeout time.Duration
	// CheckEvery is how often, at most, DockerConfig is read again (on use,
	// never in the background). Zero: DefaultCheckEvery.
	CheckEvery time.Duration
	// Logger receives config reloads and skipped providers. Nil: discard.
	Logger *slog.Logger
	// Registerer receives the credential metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// Keychain resolves lifeboat's credentials for a repository: the first
// plugin whose matchImages match and that returns credentials, else the
// docker config, else anonymous. It is safe for concurrent use.
type Keychain struct {
	plugins []*plugin
	docker  *dockerConfig
	// gen counts credential changes (a docker config that changed, a
	// plugin that returned other credentials than before): see Generation.
	gen atomic.Uint64
}

// New loads the provider config and the docker config. A file that cannot
// be read or parsed is an error: a broken credentials setup is a
// configuration error, found at start.
func New(opts Options) (*Keychain, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = DefaultCheckEvery
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	k := &Keychain{}
	m := newMetrics(opts.Registerer)
	if opts.ProviderConfig != "" {
		plugins, err := loadPlugins(opts, m, k.changed)
		if err != nil {
			return nil, err
		}
		k.plugins = plugins
	}
	if opts.DockerConfig != "" {
		d, err := newDockerConfig(opts, m, k.changed)
		if err != nil {
			return nil, err
		}
		k.docker = d
	}
	return k, nil
}

func (k *Keychain) changed() { k.gen.Add(1) }

// Generation changes whenever the credentials may have: an authenticated
// transport made under an older generation should not be reused. It reads
// the docker config again first if CheckEvery has passed.
func (k *Keychain) Generation() uint64 {
	if k.docker != nil {
		k.docker.maybeReload()
	}
	return k.gen.Load()
}

// Resolve implements authn.Keychain.
func (k *Keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain. target is a repository
// (registry/repo, what plugins are asked for) or a registry.
func (k *Keychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	image := target.String()
	for _, p := range k.plugins {
		if !p.matches(image) {
			continue
		}
		cfg, ok, err := p.lookup(ctx, image)
		if err != nil {
			return nil, err
		}
		if ok {
			return authn.FromConfig(cfg), nil
		}
	}
	if k.docker != nil {
		cfg, ok, err := k.docker.lookup(ctx, target)
		if err != nil {
			return nil, err
		}
		if ok {
			return authn.FromConfig(cfg), nil
		}
	}
	return authn.Anonymous, nil
}

// callError is a plugin or helper call that failed. It names the program
// and how it failed, never what it printed on stdout (credentials).
type callError struct {
	kind, name string // "plugin" or "helper", and its name
	timeout    time.Duration
	err        error
}

func (e *callError) Error() string {
	if e.timeout > 0 {
		return fmt.Sprintf("credential %s %s: no answer within %s: %v", e.kind, e.name, e.timeout, e.err)
	}
	return fmt.Sprintf("credential %s %s: %v", e.kind, e.name, e.err)
}

func (e *callError) Unwrap() error { return e.err }

package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletconfig "k8s.io/kubelet/config/v1"
	cpv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

// The config and protocol versions kubelet accepts; lifeboat reads them all
// into the v1 types, which have every field the older ones have.
var (
	configVersions   = []string{"kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"}
	protocolVersions = []string{"credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1", "credentialprovider.kubelet.k8s.io/v1alpha1"}
)

// failureBackoff: after a plugin failed or timed out, it is not run again
// for this long; lookups fail at once meanwhile, so a burst of misses
// behind a broken plugin fails fast instead of each waiting the timeout.
const failureBackoff = 5 * time.Second

// globalCacheKey is the cache key of a response with cacheKeyType Global.
const globalCacheKey = "*"

// plugin is one kubelet credential provider, run as kubelet runs it.
type plugin struct {
	name, path  string
	args, env   []string
	apiVersion  string
	matchImages []string
	defaultTTL  time.Duration
	timeout     time.Duration
	now         func() time.Time
	metrics     *metrics
	changed     func()

	running chan struct{} // holds a token while the plugin runs
	mu      sync.Mutex
	cache   map[string]cachedResponse // by image, registry or globalCacheKey
	failed  error                     // the last call's failure, until failedUntil
	until   time.Time
}

type cachedResponse struct {
	auth    map[string]cpv1.AuthConfig
	expires time.Time
}

// loadPlugins reads a kubelet CredentialProviderConfig (YAML or JSON) and
// checks it as kubelet does. A provider that needs a pod's service account
// token (tokenAttributes) is skipped: lifeboat pulls as the node.
func loadPlugins(opts Options, m *metrics, changed func()) ([]*plugin, error) {
	cfg, err := readProviderConfig(opts.ProviderConfig)
	if err != nil {
		return nil, err
	}
	if opts.ProviderBinDir == "" {
		return nil, errors.New("image credential provider config given without a bin dir")
	}
	seen := map[string]bool{}
	var out []*plugin
	for i, p := range cfg.Providers {
		where := fmt.Sprintf("%s: providers[%d]", opts.ProviderConfig, i)
		if err := validateProvider(p, seen); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if p.TokenAttributes != nil {
			opts.Logger.Warn("skipping a credential provider that needs a pod's service account token: lifeboat pulls as the node", "provider", p.Name)
			continue
		}
		path := filepath.Join(opts.ProviderBinDir, p.Name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			return nil, fmt.Errorf("%s: plugin %s not found in %s", where, p.Name, opts.ProviderBinDir)
		}
		env := os.Environ()
		for _, e := range p.Env {
			env = append(env, e.Name+"="+e.Value)
		}
		out = append(out, &plugin{
			name: p.Name, path: path, args: p.Args, env: env, apiVersion: p.APIVersion,
			matchImages: p.MatchImages, defaultTTL: p.DefaultCacheDuration.Duration,
			timeout: opts.Timeout, now: opts.Now, metrics: m, changed: changed,
			cache: map[string]cachedResponse{}, running: make(chan struct{}, 1),
		})
	}
	return out, nil
}

// readProviderConfig decodes the file strictly (an unknown field is an
// error, as in kubelet) into the v1 types.
func readProviderConfig(path string) (kubeletconfig.CredentialProviderConfig, error) {
	var cfg kubeletconfig.CredentialProviderConfig
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read image credential provider config: %w", err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return cfg, fmt.Errorf("parse %s: %w", path, err)
	}
	asJSON, err := json.Marshal(doc)
	if err != nil {
		return cfg, fmt.Errorf("parse %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(asJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("parse %s: %w", path, err)
	}
	if cfg.Kind != "CredentialProviderConfig" || !slices.Contains(configVersions, cfg.APIVersion) {
		return cfg, fmt.Errorf("%s: want kind CredentialProviderConfig of apiVersion %s, not %s %s",
			path, strings.Join(configVersions, ", "), cfg.Kind, cfg.APIVersion)
	}
	return cfg, nil
}

func validateProvider(p kubeletconfig.CredentialProvider, seen map[string]bool) error {
	switch {
	case p.Name == "" || strings.ContainsAny(p.Name, `/\`) || p.Name == "." || p.Name == "..":
		return fmt.Errorf("name %q: must be a file name in the bin dir", p.Name)
	case seen[p.Name]:
		return fmt.Errorf("name %q given twice", p.Name)
	case len(p.MatchImages) == 0:
		return errors.New("matchImages is required")
	case p.DefaultCacheDuration == nil || p.DefaultCacheDuration.Duration < 0:
		return errors.New("defaultCacheDuration is required and must not be negative")
	case !slices.Contains(protocolVersions, p.APIVersion):
		return fmt.Errorf("apiVersion %q: must be one of %s", p.APIVersion, strings.Join(protocolVersions, ", "))
	}
	for _, m := range p.MatchImages {
		if _, err := parseImageURL(m); err != nil {
			return fmt.Errorf("matchImages %q: %w", m, err)
		}
	}
	for _, e := range p.Env {
		if e.Name == "" {
			return errors.New("env: a variable has no name")
		}
	}
	seen[p.Name] = true
	return nil
}

func (p *plugin) matches(image string) bool {
	return slices.ContainsFunc(p.matchImages, func(m string) bool { return urlsMatch(m, image) })
}

// lookup returns the credentials the plugin gives image: from its cache
// (by image, then registry, then global, as kubelet looks), else by running
// it. One run at a time per plugin: callers that wait find the answer in
// the cache when its key covers their image (Registry, Global), so a burst
// of first pulls costs one run, and see a failure at once (failureBackoff).
func (p *plugin) lookup(ctx context.Context, image string) (authn.AuthConfig, bool, error) {
	if auth, ok := p.cached(image); ok {
		return pick(auth, image)
	}
	select {
	case p.running <- struct{}{}:
	case <-ctx.Done():
		return authn.AuthConfig{}, false, &callError{kind: "plugin", name: p.name, err: ctx.Err()}
	}
	defer func() { <-p.running }()
	if auth, ok := p.cached(image); ok {
		return pick(auth, image)
	}
	auth, err := p.call(ctx, image)
	if err != nil {
		return authn.AuthConfig{}, false, err
	}
	return pick(auth, image)
}

func (p *plugin) cached(image string) (map[string]cpv1.AuthConfig, bool) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range []string{image, registryOf(image), globalCacheKey} {
		// An expired answer stays until replaced or swept: the next
		// answer is compared with it.
		if c, ok := p.cache[k]; ok && now.Before(c.expires) {
			return c.auth, true
		}
	}
	return nil, false
}

// call runs the plugin for image and caches its answer as it asks.
func (p *plugin) call(ctx context.Context, image string) (map[string]cpv1.AuthConfig, error) {
	p.mu.Lock()
	if err := p.failed; err != nil && p.now().Before(p.until) {
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	resp, err := p.exec(ctx, image)
	p.metrics.calls.WithLabelValues("plugin", p.name, resultOf(err)).Inc()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		ce := &callError{kind: "plugin", name: p.name, err: err}
		if errors.Is(err, context.DeadlineExceeded) {
			ce.timeout = p.timeout
		}
		p.failed, p.until = ce, p.now().Add(failureBackoff)
		return nil, ce
	}
	p.failed = nil
	ttl := p.defaultTTL
	if resp.CacheDuration != nil {
		ttl = resp.CacheDuration.Duration
	}
	if ttl > 0 {
		key := globalCacheKey
		switch resp.CacheKeyType {
		case cpv1.ImagePluginCacheKeyType:
			key = image
		case cpv1.RegistryPluginCacheKeyType:
			key = registryOf(image)
		}
		if old, ok := p.cache[key]; ok && !sameAuth(old.auth, resp.Auth) {
			p.changed() // other credentials: transports made with the old ones go
		}
		p.sweep()
		p.cache[key] = cachedResponse{auth: resp.Auth, expires: p.now().Add(ttl)}
	}
	return resp.Auth, nil
}

// maxCached bounds the cached responses (an Image cache key makes one per
// repository); past it, expired ones are dropped, then all.
const maxCached = 4096

func (p *plugin) sweep() {
	if len(p.cache) < maxCached {
		return
	}
	now := p.now()
	for k, c := range p.cache {
		if !now.Before(c.expires) {
			delete(p.cache, k)
		}
	}
	if len(p.cache) >= maxCached {
		clear(p.cache)
	}
}

// exec runs the plugin once with the CredentialProviderRequest for image
// on stdin, within the timeout, and checks its response.
func (p *plugin) exec(ctx context.Context, image string) (*cpv1.CredentialProviderResponse, error) {
	req, err := json.Marshal(cpv1.CredentialProviderRequest{
		TypeMeta: metav1.TypeMeta{Kind: "CredentialProviderRequest", APIVersion: p.apiVersion},
		Image:    image,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	out, err := run(ctx, p.path, p.args, p.env, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	var resp cpv1.CredentialProviderResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, errors.New("response is not a CredentialProviderResponse (JSON)")
	}
	switch {
	case resp.Kind != "CredentialProviderResponse" || resp.APIVersion != p.apiVersion:
		return nil, fmt.Errorf("response is %s %s, want CredentialProviderResponse %s", resp.Kind, resp.APIVersion, p.apiVersion)
	case resp.CacheKeyType != cpv1.ImagePluginCacheKeyType && resp.CacheKeyType != cpv1.RegistryPluginCacheKeyType && resp.CacheKeyType != cpv1.GlobalPluginCacheKeyType:
		return nil, fmt.Errorf("response has cacheKeyType %q, want Image, Registry or Global", resp.CacheKeyType)
	case resp.CacheDuration != nil && resp.CacheDuration.Duration < 0:
		return nil, errors.New("response has a negative cacheDuration")
	}
	return &resp, nil
}

// pick chooses, among a response's auth entries (keyed by matchImages
// patterns), the most specific one that matches image.
func pick(auth map[string]cpv1.AuthConfig, image string) (authn.AuthConfig, bool, error) {
	keys := make([]string, 0, len(auth))
	for k := range auth {
		if urlsMatch(k, image) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return authn.AuthConfig{}, false, nil
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	a := auth[keys[0]]
	return authn.AuthConfig{Username: a.Username, Password: a.Password}, true, nil
}

func sameAuth(a, b map[string]cpv1.AuthConfig) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

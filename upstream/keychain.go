package upstream

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// DockerConfigKeychain reads upstream credentials from a docker config.json
// or a Kubernetes .dockerconfigjson pull secret (the same format). Only the
// "auths" section is used; credential helpers are not run. A registry with
// no entry is pulled anonymously (bearer tokens included).
func DockerConfigKeychain(path string) (authn.Keychain, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read docker config: %w", err)
	}
	var cfg struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("parse docker config %s: %w", path, err)
	}
	k := configKeychain{}
	for key, a := range cfg.Auths {
		k[normalizeAuthKey(key)] = a
	}
	return k, nil
}

type configKeychain map[string]authn.AuthConfig

// normalizeAuthKey reduces "https://index.docker.io/v1/", "docker.io" and
// "registry.example:5000/" to the host a registry name resolves to.
func normalizeAuthKey(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	if r, err := name.NewRegistry(key); err == nil {
		return r.RegistryStr()
	}
	return key
}

func (k configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	if a, ok := k[normalizeAuthKey(target.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

package nodeconfig

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Target is one registry the runtime should reach through lifeboat.
type Target struct {
	// Name is the registry host the runtime pulls it by, and names its
	// directory: docker.io, registry.example.com, localhost:5001.
	Name string
	// Server is the registry's real endpoint, the runtime's fallback:
	// https://registry-1.docker.io.
	Server string
}

// ParseTarget parses NAME or NAME=SERVER_URL. A bare NAME's server is the
// Server of the entry of known with that Name, else https://NAME. The error
// says what is wrong, not where entry came from: the caller adds that.
func ParseTarget(entry string, known []Target) (Target, error) {
	name, server, hasServer := strings.Cut(entry, "=")
	if err := checkName(name); err != nil {
		return Target{}, err
	}
	if !hasServer {
		return Target{Name: name, Server: defaultServer(name, known)}, nil
	}
	if err := checkServer(server); err != nil {
		return Target{}, err
	}
	return Target{Name: name, Server: server}, nil
}

// defaultServer is the real registry behind a name: the known one of that
// name, else https://<name>.
func defaultServer(name string, known []Target) string {
	for _, t := range known {
		if t.Name == name {
			return t.Server
		}
	}
	return "https://" + name
}

// ParseMirror checks lifeboat's URL, as the runtime reaches it: http or
// https, a host, no path (lifeboat serves /v2/ at its root). It returns
// scheme://host[:port]. The error says what is wrong, not where s came
// from: the caller adds that.
func ParseMirror(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("must be an http or https URL with a host, e.g. http://127.0.0.1:5000")
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("must be scheme://host[:port] only (lifeboat serves /v2/ at its root)")
	}
	return u.Scheme + "://" + u.Host, nil
}

// registryName is a registry host as containerd names its directory:
// docker.io, registry.example.com, localhost:5001.
var registryName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?$`)

// checkName refuses a name that is not a registry host. A name becomes a
// directory, so this is what keeps a write inside the hosts directory.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty registry name")
	case name == "." || name == "..":
		return fmt.Errorf("registry name %q is not a registry host", name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("registry name %q must not contain '/': it is a host such as docker.io, not a repository", name)
	case !registryName.MatchString(name):
		return fmt.Errorf("registry name %q must be a registry host, e.g. docker.io or localhost:5001", name)
	}
	return nil
}

func checkServer(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("server %q must be an http or https URL, e.g. https://registry.example.com", s)
	}
	return nil
}

package credentials

import (
	"net"
	"net/url"
	"path/filepath"
	"strings"
)

// urlsMatch reports whether image ("registry[:port]/repo") matches a
// matchImages pattern as kubelet matches them: the same number of host
// name parts, each part a glob ("*.dkr.ecr.*.amazonaws.com"), the same
// port, and the pattern's path a prefix of the image's. A pattern that
// does not parse matches nothing.
func urlsMatch(pattern, image string) bool {
	p, err := parseImageURL(pattern)
	if err != nil {
		return false
	}
	t, err := parseImageURL(image)
	if err != nil {
		return false
	}
	pParts, pPort := splitHost(p)
	tParts, tPort := splitHost(t)
	if pPort != tPort || len(pParts) != len(tParts) || !strings.HasPrefix(t.Path, p.Path) {
		return false
	}
	for i, part := range pParts {
		if ok, err := filepath.Match(part, tParts[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

// parseImageURL parses a scheme-less registry/path as a URL.
func parseImageURL(s string) (*url.URL, error) {
	u, err := url.Parse("https://" + s)
	if err != nil {
		return nil, err
	}
	u.Scheme = ""
	return u, nil
}

func splitHost(u *url.URL) ([]string, string) {
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return strings.Split(host, "."), port
}

// registryOf is the registry part of an image, kubelet's Registry cache key.
func registryOf(image string) string {
	r, _, _ := strings.Cut(image, "/")
	return r
}

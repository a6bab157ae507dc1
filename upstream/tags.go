package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// A tag list is read into memory whole, so it is bounded: upstream (or
// whoever answers in its name) chooses how many pages it has and how big
// they are. Past a bound ListTags fails with a bad-response *Error wrapping
// ErrTooLarge rather than return a truncated list that would be served
// and remembered as complete; the proxy then serves the list it last saw,
// if any.
const (
	// maxTagPages bounds how many pages of a tag list are followed.
	maxTagPages = 100
	// maxTagPageBytes bounds one page's body.
	maxTagPageBytes = 4 << 20
	// maxTagListBytes bounds the bodies of all pages together.
	maxTagListBytes = 16 << 20
	// maxTags bounds the tags of a repository.
	maxTags = 100_000
	// maxTagLength is the distribution grammar's limit on a tag
	// ([a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}). A page with a longer (or empty)
	// tag is refused whole.
	maxTagLength = 128
)

// ListTags fetches a repository's whole tag list, following Link headers
// on the registry's own host and tag list path.
func (c *Client) ListTags(ctx context.Context, repo string) ([]string, error) {
	first := c.url(repo, "tags", "list") + "?n=1000"
	next, err := url.Parse(first)
	if err != nil {
		return nil, err
	}
	var all []string
	budget := int64(maxTagListBytes)
	for page := 0; next != nil; page++ {
		if page == maxTagPages {
			return nil, c.badTags(repo, fmt.Errorf("%w: more than %d pages", ErrTooLarge, maxTagPages))
		}
		resp, err := c.do(ctx, repo, http.MethodGet, next.String(), nil)
		if err != nil {
			return nil, err
		}
		all, err = c.readTagPage(resp, repo, all, &budget)
		if err != nil {
			return nil, err
		}
		if next, err = nextLink(next, resp.Header.Get("Link")); err != nil {
			return nil, c.badTags(repo, err)
		}
	}
	return all, nil
}

// readTagPage decodes one page, appending its tags to all and spending its
// bytes from budget.
func (c *Client) readTagPage(resp *http.Response, repo string, all []string, budget *int64) ([]string, error) {
	defer resp.Body.Close()
	limit := min(*budget, maxTagPageBytes)
	body := &countingReader{r: io.LimitReader(resp.Body, limit+1)}
	all, err := decodeTags(body, all)
	*budget -= body.n
	switch {
	case body.n > limit && limit == maxTagPageBytes:
		return nil, c.badTags(repo, fmt.Errorf("%w: a page of more than %d bytes", ErrTooLarge, maxTagPageBytes))
	case body.n > limit:
		return nil, c.badTags(repo, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxTagListBytes))
	case errors.Is(err, errBadTagList), errors.Is(err, ErrTooLarge), errors.As(err, new(*json.SyntaxError)):
		return nil, c.badTags(repo, err)
	case errors.Is(err, io.EOF): // an empty body; a body cut short is io.ErrUnexpectedEOF, left to classify
		return nil, c.badTags(repo, fmt.Errorf("%w: an empty page", errBadTagList))
	case err != nil:
		return nil, c.classify(fmt.Errorf("decode tag list of %s/%s: %w", c.cfg.Name, repo, err))
	}
	return all, nil
}

func (c *Client) badTags(repo string, err error) *Error {
	return &Error{Registry: c.cfg.Name, Reason: ReasonBadResponse, Err: fmt.Errorf("tag list of %s/%s: %w", c.cfg.Name, repo, err)}
}

// errBadTagList is the cause of a tag list page that is JSON but not a
// tag list.
var errBadTagList = errors.New("not a tag list")

// decodeTags streams {"tags": [...]} from r, appending to all: each tag is
// checked as it is read, so a page of huge or countless tags is refused
// without being held whole. Other members are skipped.
func decodeTags(r io.Reader, all []string) ([]string, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return all, err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return all, err
		}
		if key != "tags" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return all, err
			}
			continue
		}
		if all, err = decodeTagArray(dec, all); err != nil {
			return all, err
		}
	}
	return all, expectDelim(dec, '}')
}

func decodeTagArray(dec *json.Decoder, all []string) ([]string, error) {
	tok, err := dec.Token()
	if err != nil || tok == nil { // "tags": null
		return all, err
	}
	if tok != json.Delim('[') {
		return all, fmt.Errorf("%w: tags is %v, not an array", errBadTagList, tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return all, err
		}
		tag, ok := tok.(string)
		switch {
		case !ok:
			return all, fmt.Errorf("%w: a tag is %T, not a string", errBadTagList, tok)
		case tag == "" || len(tag) > maxTagLength:
			return all, fmt.Errorf("%w: a tag of %d bytes (1 to %d allowed)", errBadTagList, len(tag), maxTagLength)
		case len(all) == maxTags:
			return all, fmt.Errorf("%w: more than %d tags", ErrTooLarge, maxTags)
		}
		all = append(all, tag)
	}
	return all, expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("%w: %v where %v belongs", errBadTagList, tok, want)
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// errBadLink is the cause of a Link header ListTags will not follow.
var errBadLink = errors.New("bad Link header")

// nextLink returns the rel="next" target of an RFC 8288 Link header,
// resolved against the page's URL, or nil when there is none. The next page
// must be the same list: same scheme, host and path as the page (its query
// may differ), no user info. A header that cannot be parsed, or a next link
// elsewhere, is an error: the list's remainder cannot be had, and a list cut
// short must not pass for whole.
func nextLink(page *url.URL, header string) (*url.URL, error) {
	rest := header
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return nil, nil
		}
		if rest[0] != '<' {
			return nil, fmt.Errorf("%w: %q", errBadLink, header)
		}
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return nil, fmt.Errorf("%w: %q", errBadLink, header)
		}
		target := rest[1:end]
		var params string
		params, rest = cutUnquoted(rest[end+1:], ',') // the next link starts after a comma outside quotes
		if !relNext(params) {
			continue
		}
		return sameList(page, target)
	}
}

// cutUnquoted cuts s around the first sep outside a quoted string.
func cutUnquoted(s string, sep byte) (before, after string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted
		case s[i] == '\\' && quoted:
			i++
		case s[i] == sep && !quoted:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// relNext reports whether link parameters (";" before each) say
// rel="next": rel holds a space-separated list of relation types.
func relNext(params string) bool {
	for params != "" {
		var p string
		p, params = cutUnquoted(params, ';')
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
			continue
		}
		for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
			if strings.EqualFold(rel, "next") {
				return true
			}
		}
	}
	return false
}

// sameList resolves target against page and checks it is the same list.
func sameList(page *url.URL, target string) (*url.URL, error) {
	ref, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("%w: next link %q: %w", errBadLink, target, err)
	}
	next := page.ResolveReference(ref)
	next.Fragment, next.RawFragment = "", ""
	if next.Scheme != page.Scheme || !strings.EqualFold(next.Host, page.Host) || next.User != nil ||
		next.Path != page.Path || next.RawPath != page.RawPath {
		return nil, fmt.Errorf("%w: next link %q leaves %s://%s%s", errBadLink, target, page.Scheme, page.Host, page.Path)
	}
	next.Host = page.Host
	if next.String() == page.String() {
		return nil, fmt.Errorf("%w: next link %q is the page itself", errBadLink, target)
	}
	return next, nil
}

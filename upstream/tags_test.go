package upstream

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tagPages is a registry that answers the tag list of repository app page
// by page: page(n, w) writes page n (from 0), with a Link header if it wants
// one. It counts the tag list requests.
type tagPages struct {
	srv      *httptest.Server
	requests atomic.Int32
}

func startTagPages(t *testing.T, page func(n int, w http.ResponseWriter)) *tagPages {
	t.Helper()
	p := &tagPages{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
		case "/v2/app/tags/list":
			p.requests.Add(1)
			n, _ := strconv.Atoi(r.URL.Query().Get("page"))
			w.Header().Set("Content-Type", "application/json")
			page(n, w)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *tagPages) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(Config{Name: "upstream.test", URL: p.srv.URL}, Options{})
	require.NoError(t, err)
	return c
}

// nextPage is the Link header to page n.
func nextPage(n int) string {
	return fmt.Sprintf(`</v2/app/tags/list?page=%d>; rel="next"`, n)
}

// tagsJSON is a tag list of count tags named prefix0, prefix1, ….
func tagsJSON(prefix string, count int) string {
	var b strings.Builder
	b.WriteString(`{"name":"app","tags":[`)
	for i := range count {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%s%d"`, prefix, i)
	}
	b.WriteString("]}")
	return b.String()
}

func requireBadResponse(t *testing.T, err error) *Error {
	t.Helper()
	var ue *Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, ReasonBadResponse, ue.Reason)
	assert.True(t, ue.Unavailable(), "a cached list may be served stale")
	return ue
}

func TestListTagsFollowsLinks(t *testing.T) {
	t.Parallel()
	var base string
	p := startTagPages(t, func(n int, w http.ResponseWriter) {
		switch n {
		case 0:
			w.Header().Set("Link", `</v2/app/tags/list?page=1>; rel="next"`)
		case 1: // absolute, on the same host, among other links
			w.Header().Set("Link", `<`+base+`/v2/app/tags/list?page=0>; rel="prev", <`+base+`/v2/app/tags/list?page=2>; rel="next"`)
		case 2: // a previous link only: the end
			w.Header().Set("Link", `</v2/app/tags/list?page=1>; rel=prev`)
		}
		fmt.Fprintf(w, `{"name":"app","tags":["p%da","p%db"]}`, n, n)
	})
	base = p.srv.URL
	tags, err := p.client(t).ListTags(t.Context(), "app")
	require.NoError(t, err)
	assert.Equal(t, []string{"p0a", "p0b", "p1a", "p1b", "p2a", "p2b"}, tags)
}

func TestListTagsFromRegistry(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 256, 1)
	up.Push(t, "app:v1", img)
	up.Push(t, "app:v2", img)
	c, err := New(Config{Name: "upstream.test", URL: up.URL}, Options{})
	require.NoError(t, err)
	tags, err := c.ListTags(t.Context(), "app")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"v1", "v2"}, tags)
}

// TestListTagsRefusesBadLinks: a Link header that cannot be parsed, or that
// leads off the registry's host, scheme or tag list, is a bad response (the
// list last seen may be served), never a 500 and never followed.
func TestListTagsRefusesBadLinks(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		_, _ = w.Write([]byte(`{"tags":["evil"]}`))
	}))
	t.Cleanup(other.Close)
	otherHost := strings.TrimPrefix(other.URL, "http://")

	for _, link := range []string{
		`<//::;rel="next"`,
		`<//::>;rel="next"`,
		`<http://[::1>; rel="next"`,
		`<` + other.URL + `/v2/app/tags/list?page=1>; rel="next"`,
		`<//` + otherHost + `/v2/app/tags/list?page=1>; rel="next"`,
		`<https://SELF/v2/app/tags/list?page=1>; rel="next"`,
		`<//user:password@SELF/v2/app/tags/list?page=1>; rel="next"`,
		`</v2/other/tags/list?page=1>; rel="next"`,
		`</v2/app/tags/list/../../other/tags/list?page=1>; rel="next"`,
		`<../../other/tags/list>; rel="next"`,
		`<>; rel="next"`,
		`</v2/app/tags/list?n=1000>; rel="next"`,
		`garbage`,
		`</v2/app/tags/list?page=1`,
	} {
		t.Run(link, func(t *testing.T) {
			t.Parallel()
			var p *tagPages
			p = startTagPages(t, func(n int, w http.ResponseWriter) {
				if n == 0 {
					w.Header().Set("Link", strings.ReplaceAll(link, "SELF", strings.TrimPrefix(p.srv.URL, "http://")))
				}
				_, _ = w.Write([]byte(`{"tags":["v1"]}`))
			})
			tags, err := p.client(t).ListTags(t.Context(), "app")
			assert.Nil(t, tags)
			requireBadResponse(t, err)
			assert.ErrorIs(t, err, errBadLink)
			assert.Equal(t, int32(1), p.requests.Load(), "no second page")
		})
	}
	assert.Zero(t, elsewhere.Load(), "no link to another host was followed")
}

// TestListTagsBounded: a tag list is refused, as a bad response wrapping
// ErrTooLarge (or as not a tag list), once it passes the bounds on bytes,
// tags, pages or a tag's length, without reading further than it must. The
// 20 pages of 4 MiB that once took lifeboat to 961 MiB stop at the fifth.
func TestListTagsBounded(t *testing.T) {
	t.Parallel()
	// A page of about 4 MiB: one tag and a long name, which is skipped.
	padded := `{"name":"` + strings.Repeat("x", maxTagPageBytes-100) + `","tags":["v1"]}`
	for _, tc := range []struct {
		name         string
		page         func(n int, w http.ResponseWriter)
		tooLarge     bool
		wantRequests int32
	}{
		{"twenty pages of 4 MiB", func(n int, w http.ResponseWriter) {
			if n < 19 {
				w.Header().Set("Link", nextPage(n+1))
			}
			_, _ = w.Write([]byte(padded))
		}, true, int32(maxTagListBytes/len(padded) + 1)},
		{"one page past 4 MiB", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"tags":["v1"],"name":"` + strings.Repeat("x", maxTagPageBytes) + `"}`))
		}, true, 1},
		{"more than 100,000 tags", func(n int, w http.ResponseWriter) {
			w.Header().Set("Link", nextPage(n+1))
			_, _ = w.Write([]byte(tagsJSON(fmt.Sprintf("p%d-", n), 30_000)))
		}, true, 4},
		{"more than 100 pages", func(n int, w http.ResponseWriter) {
			w.Header().Set("Link", nextPage(n+1))
			_, _ = w.Write([]byte(tagsJSON(fmt.Sprintf("p%d-", n), 1)))
		}, true, maxTagPages},
		{"a tag of 1 MiB", func(n int, w http.ResponseWriter) {
			w.Header().Set("Link", nextPage(n+1))
			_, _ = w.Write([]byte(`{"tags":["v1","` + strings.Repeat("a", 1<<20) + `"]}`))
		}, false, 1},
		{"a tag of 129 bytes", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"tags":["` + strings.Repeat("a", maxTagLength+1) + `"]}`))
		}, false, 1},
		{"an empty tag", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"tags":[""]}`))
		}, false, 1},
		{"tags not strings", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"tags":[["v1"]]}`))
		}, false, 1},
		{"tags not an array", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"tags":"v1"}`))
		}, false, 1},
		{"not JSON", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`<html>`))
		}, false, 1},
		{"an empty page", func(n int, w http.ResponseWriter) {}, false, 1},
		{"an array", func(n int, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`["v1"]`))
		}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startTagPages(t, tc.page)
			tags, err := p.client(t).ListTags(t.Context(), "app")
			assert.Nil(t, tags)
			requireBadResponse(t, err)
			if tc.tooLarge {
				assert.ErrorIs(t, err, ErrTooLarge)
			} else {
				assert.NotErrorIs(t, err, ErrTooLarge)
			}
			assert.Equal(t, tc.wantRequests, p.requests.Load())
		})
	}
}

// TestListTagsWithinBounds: a list at the bounds is whole.
func TestListTagsWithinBounds(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxTagLength)
	p := startTagPages(t, func(n int, w http.ResponseWriter) {
		if n < 4 {
			w.Header().Set("Link", nextPage(n+1))
		}
		if n == 4 {
			_, _ = w.Write([]byte(`{"tags":null}`))
			return
		}
		body := tagsJSON(fmt.Sprintf("p%d-", n), maxTags/4-1)
		_, _ = w.Write([]byte(strings.Replace(body, `"tags":[`, `"tags":["`+long+`",`, 1)))
	})
	tags, err := p.client(t).ListTags(t.Context(), "app")
	require.NoError(t, err)
	assert.Len(t, tags, maxTags)
	assert.Contains(t, tags, long)
}

func TestNextLink(t *testing.T) {
	t.Parallel()
	page, err := url.Parse("https://registry.example/prefix/v2/app/tags/list?n=1000")
	require.NoError(t, err)
	const list = "https://registry.example/prefix/v2/app/tags/list"
	for _, tc := range []struct{ header, want string }{
		{``, ``},
		{`</prefix/v2/app/tags/list?last=b&n=2>; rel="next"`, list + `?last=b&n=2`},
		{`<?last=b>; rel=next`, list + `?last=b`},
		{`<` + list + `?last=b#frag>; rel="prev next"`, list + `?last=b`},
		{`<?last=a>; title="a, b; rel=next"; rel="prev", <?last=c>; REL="NEXT"`, list + `?last=c`},
		{`<?last=a>; rel="prev"`, ``},
	} {
		next, err := nextLink(page, tc.header)
		require.NoError(t, err, tc.header)
		got := ""
		if next != nil {
			got = next.String()
		}
		assert.Equal(t, tc.want, got, tc.header)
	}
}

// FuzzNextLink: whatever the Link header, nextLink does not panic, and a
// next page it returns is the same tag list on the same host and scheme,
// also once printed and parsed again (as the request for it is).
func FuzzNextLink(f *testing.F) {
	page, err := url.Parse("https://registry.example/prefix/v2/app/tags/list?n=1000")
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, header string) {
		next, err := nextLink(page, header)
		if err != nil || next == nil {
			assert.Nil(t, next)
			return
		}
		again, err := url.Parse(next.String())
		require.NoError(t, err)
		for _, u := range []*url.URL{next, again} {
			assert.Equal(t, page.Scheme, u.Scheme, header)
			assert.Equal(t, page.Host, u.Host, header)
			assert.Equal(t, page.Path, u.Path, header)
			assert.Nil(t, u.User, header)
		}
	})
}

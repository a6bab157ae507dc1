package lifeboat_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQuickStartBlockIsTheScript: the README's quick start shows
// docs/quickstart.sh byte for byte, so what a reader copies is what
// integration/quickstart_test.go runs.
func TestQuickStartBlockIsTheScript(t *testing.T) {
	t.Parallel()
	script, err := os.ReadFile("docs/quickstart.sh")
	require.NoError(t, err)
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	require.True(t, ok, "README.md has no Quick start section")
	_, block, ok := strings.Cut(section, "\n```sh\n")
	require.True(t, ok)
	block, _, ok = strings.Cut(block, "\n```\n")
	require.True(t, ok)
	assert.Equal(t, string(script), block+"\n", "the README's quick start block differs from docs/quickstart.sh: copy the file into it")
}

// TestDocLinksResolve: every relative link in the Markdown files points at
// a file that exists and, with a #fragment, at a heading it has (as GitHub
// names it), so moving a section cannot leave a link behind.
func TestDocLinksResolve(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	files = append(files, "README.md", "SECURITY.md", "charts/lifeboat/README.md")
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, file := range files {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range link.FindAllStringSubmatch(stripCode(string(text)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
			}
			if _, err := os.Stat(dest); !assert.NoError(t, err, "%s links to %s", file, target) || frag == "" {
				continue
			}
			destText, err := os.ReadFile(dest)
			require.NoError(t, err)
			assert.Contains(t, anchors(string(destText)), frag, "%s links to %s: no such heading", file, target)
		}
	}
}

// stripCode drops fenced code blocks, whose brackets are not links.
func stripCode(text string) string {
	var b strings.Builder
	inside := false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "```") {
			inside = !inside
			continue
		}
		if !inside {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// anchors are the fragments GitHub gives a Markdown file's headings: lower
// case, punctuation but - and _ dropped, spaces as -, a repeat numbered.
func anchors(text string) []string {
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	seen := map[string]int{}
	var out []string
	for line := range strings.SplitSeq(stripCode(text), "\n") {
		h := strings.TrimLeft(line, "#")
		if h == line || !strings.HasPrefix(h, " ") {
			continue
		}
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), ""), " ", "-")
		if n := seen[a]; n > 0 {
			out = append(out, a+"-"+strconv.Itoa(n))
		} else {
			out = append(out, a)
		}
		seen[a]++
	}
	return out
}

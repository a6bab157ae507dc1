package nodeconfig

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImportsOnlyTheStandardLibraryAndTOML keeps nodeconfig a leaf: it
// writes files, so it needs the standard library and a TOML parser, and
// nothing of HTTP, metrics or the rest of lifeboat.
func TestImportsOnlyTheStandardLibraryAndTOML(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	require.NoError(t, err)
	for _, dep := range strings.Fields(string(out)) {
		ok := dep == "github.com/lifeboat-dev/lifeboat/nodeconfig" || strings.HasPrefix(dep, "github.com/pelletier/go-toml/v2")
		assert.True(t, ok, "nodeconfig must not depend on %s", dep)
	}

	out, err = exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	for _, dep := range strings.Fields(string(out)) {
		assert.False(t, dep == "net/http" || strings.HasPrefix(dep, "net/http/"), "nodeconfig must not depend on %s", dep)
	}
}

package logtext

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestClip(t *testing.T) {
	assert.Equal(t, "short", Clip("short", 5))
	assert.Equal(t, "ab…(6 bytes)", Clip("abcdef", 2))
	long := strings.Repeat("x", 1<<20)
	assert.Len(t, Clip(long, 256), 256+len("…(1048576 bytes)"))
}

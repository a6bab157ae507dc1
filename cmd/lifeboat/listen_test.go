package main

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestListenerRefusesConnectionsOverItsLimit: with the limit held by idle
// clients, a new connection is closed at once, and a slot frees when a
// client leaves.
func TestListenerRefusesConnectionsOverItsLimit(t *testing.T) {
	t.Parallel()
	ln, err := listen("127.0.0.1:0", 2)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }() // echo until the client leaves
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	echoes := func(c net.Conn) bool {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			return false
		}
		buf := make([]byte, 1)
		_, err := io.ReadFull(c, buf)
		return err == nil
	}
	a, b := dial(), dial()
	require.True(t, echoes(a))
	require.True(t, echoes(b))
	assert.False(t, echoes(dial()), "a third connection is closed at once")
	assert.Equal(t, int64(1), ln.(*limitListener).Refuse.Load())

	a.Close()
	require.Eventually(t, func() bool { return echoes(dial()) }, 10*time.Second, 10*time.Millisecond, "a slot frees when a client leaves")
}

func TestRaiseFileLimit(t *testing.T) {
	t.Parallel()
	n, err := raiseFileLimit()
	require.NoError(t, err)
	assert.Positive(t, n)
}

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowLog is a stderr that takes its time over each write, as a log
// pipe whose reader lags does, and keeps what it was given.
type slowLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *slowLog) Write(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.WriteString(string(p))
}

func (s *slowLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeWritesEveryLogLineBeforeItReturns: serve's log lines leave
// through a batching writer (internal/logwriter); the access lines of the
// last requests and the "stopped" line still reach stderr, in order, by
// the time serve returns, however slow stderr is.
func TestServeWritesEveryLogLineBeforeItReturns(t *testing.T) {
	var stderr slowLog
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--data-dir", t.TempDir(), "--log-format", "json",
			"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--upstream", "registry.test=http://127.0.0.1:1", "--default-registry", "registry.test"}, &stderr)
	}()
	var listen string
	require.Eventually(t, func() bool {
		for line := range strings.Lines(stderr.String()) {
			var l struct{ Msg, Listen string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "lifeboat serving" {
				listen = l.Listen
				return true
			}
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "lifeboat serving:\n%s", stderr.String())

	const requests = 20
	for range requests {
		resp, err := http.Get("http://" + listen + "/v2/")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	cancel()
	require.NoError(t, <-done)

	var access int
	var last string
	for line := range strings.Lines(stderr.String()) {
		var l struct{ Msg, Path string }
		require.NoError(t, json.Unmarshal([]byte(line), &l), "a whole JSON line: %q", line)
		if l.Msg == "request" && l.Path == "/v2/" {
			access++
		}
		last = l.Msg
	}
	assert.Equal(t, requests, access, "access lines written by the time serve returned")
	assert.Equal(t, "stopped", last, "the last line")
}

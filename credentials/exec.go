package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// maxOutput bounds what is read of a program's stdout (a credential
// response is a few KiB) and stderrShown what of its stderr goes into an
// error.
const (
	maxOutput   = 1 << 20
	stderrShown = 200
)

// run runs a plugin or helper with stdin, within ctx (which carries the
// call's timeout), and returns its stdout. A program that does not exit
// when ctx ends is killed; one whose children keep its pipes open is let go
// after waitDelay. The error says how it failed and quotes the start of
// its stderr, never its stdout, which carries credentials.
func run(ctx context.Context, path string, args, env []string, stdin io.Reader) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var stdout, stderr limitedBuffer
	stdout.limit, stderr.limit = maxOutput, stderrShown
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return stdout.Bytes(), fmt.Errorf("%w: stderr: %q", err, msg)
		}
		return stdout.Bytes(), err
	}
	if stdout.truncated {
		return nil, errors.New("output larger than 1 MiB")
	}
	return stdout.Bytes(), nil
}

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	limit     int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); room < len(p) {
		b.truncated = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// resultOf is the calls metric's result for a call's error.
func resultOf(err error) string {
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, context.DeadlineExceeded):
		return resultTimeout
	}
	return resultError
}

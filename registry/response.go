package registry

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// sendChunk is how much of a file one sendfile call may send before the
// write deadline is moved on: a client must take this much per WriteStall
// (1 MiB per 30 s by default, 35 KB/s) to keep its connection.
const sendChunk = 1 << 20

// recorder notes status, bytes and the first write error for the access
// log, and keeps a progress deadline on the connection: every write must
// make progress within stall, so a client that stops reading is let go
// instead of holding a socket and an open blob file forever. (A blanket
// http.Server WriteTimeout would cut long blob streams instead.)
type recorder struct {
	http.ResponseWriter
	rc          *http.ResponseController
	stall       time.Duration
	status      int
	bytes       int64
	wroteHeader bool
	noDeadlines bool  // the writer cannot take deadlines (a test recorder)
	err         error // the first write error: the client left or stopped reading
}

func newRecorder(w http.ResponseWriter, stall time.Duration) *recorder {
	r := &recorder{ResponseWriter: w, rc: http.NewResponseController(w), stall: stall, status: http.StatusOK}
	// Also reset the deadline a previous request on this connection left.
	r.extend()
	return r
}

// extend moves the write deadline to stall from now. A writer that cannot
// take deadlines (a test recorder) simply gets none.
func (r *recorder) extend() {
	if r.noDeadlines {
		return
	}
	if err := r.rc.SetWriteDeadline(time.Now().Add(r.stall)); errors.Is(err, http.ErrNotSupported) {
		r.noDeadlines = true // asked once, not on every chunk
	}
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write writes p at most sendChunk at a time, each with a fresh deadline.
func (r *recorder) Write(p []byte) (int, error) {
	r.wroteHeader = true
	written := 0
	for {
		chunk := p[:min(len(p), sendChunk)]
		r.extend()
		n, err := r.ResponseWriter.Write(chunk)
		written += n
		r.bytes += int64(n)
		p = p[n:]
		if err != nil || len(p) == 0 {
			r.failed(err)
			return written, err
		}
	}
}

func (r *recorder) failed(err error) {
	if err != nil && r.err == nil {
		r.err = err
	}
}

// ReadFrom sends a file (what http.ServeContent copies a cached blob from)
// with the ResponseWriter's own ReadFrom, so that sendfile still works, one
// sendChunk at a time, each with a fresh deadline. Anything else is copied
// through Write, so each write gets its deadline once its read returned: a
// slow download in progress is not the client's stall.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wroteHeader = true
	rf, ok := r.ResponseWriter.(io.ReaderFrom)
	file, limit := fileSource(src)
	if !ok || file == nil {
		return io.Copy(writerOnly{r}, src)
	}
	var n int64
	for limit < 0 || n < limit {
		chunk := int64(sendChunk)
		if limit >= 0 {
			chunk = min(chunk, limit-n)
		}
		r.extend()
		// One level of LimitedReader over the *os.File: what net's
		// sendfile recognises.
		m, err := rf.ReadFrom(&io.LimitedReader{R: file, N: chunk})
		n += m
		r.bytes += m
		if lr, ok := src.(*io.LimitedReader); ok {
			lr.N -= m
		}
		if err != nil {
			r.failed(err)
			return n, err
		}
		if m < chunk {
			break // the end of the file
		}
	}
	return n, nil
}

// fileSource returns the file under src and how many bytes of it src
// allows (-1: to its end), or nil if src is not a file.
func fileSource(src io.Reader) (*os.File, int64) {
	if lr, ok := src.(*io.LimitedReader); ok {
		if f, ok := lr.R.(*os.File); ok {
			return f, max(lr.N, 0)
		}
		return nil, 0
	}
	if f, ok := src.(*os.File); ok {
		return f, -1
	}
	return nil, 0
}

// writerOnly hides ReadFrom, so io.Copy uses Write.
type writerOnly struct{ io.Writer }

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

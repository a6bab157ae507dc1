package logwriter

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// BenchmarkAccessLines logs access-line-sized JSON records from parallel
// goroutines into a pipe that another goroutine drains (stderr under a
// container runtime is a pipe): straight to the pipe, and through a
// Writer. ns/op is wall time per line with 16 goroutines per core writing.
func BenchmarkAccessLines(b *testing.B) {
	for _, way := range []string{"direct", "logwriter"} {
		b.Run(way, func(b *testing.B) {
			r, pw, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, r); close(drained) }()
			var dst io.Writer = pw
			var w *Writer
			if way == "logwriter" {
				w = New(pw, DefaultLimit)
				dst = w
			}
			log := slog.New(slog.NewJSONHandler(dst, nil))
			b.ReportAllocs()
			b.SetParallelism(16) // 32 goroutines on 2 cores: the answers of one revalidation
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					log.LogAttrs(b.Context(), slog.LevelInfo, "request",
						slog.String("method", "HEAD"), slog.String("path", "/v2/library/alpine/manifests/3.20"),
						slog.Int("status", 200), slog.Int64("bytes", 0), slog.Duration("duration", 21*time.Millisecond),
						slog.String("kind", "manifest"), slog.String("registry", "docker.io"), slog.String("cache", "hit"))
				}
			})
			b.StopTimer()
			if w != nil {
				_ = w.Close()
			}
			pw.Close()
			<-drained
			r.Close()
		})
	}
}

// Command servefile is the ceiling lifeboat's cache hits are measured
// against in `make bench`: it serves one file with http.ServeFile (the
// blob-throughput ceiling), and at /memory the same file's bytes from
// memory with a bare handler (the manifest-hit ceiling: what any Go HTTP
// server pays per request, with nothing else to do).
package main

import (
	"log"
	"net/http"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: servefile ADDR FILE")
	}
	file := os.Args[2]
	body, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	size := strconv.Itoa(len(body))
	log.Fatal(http.ListenAndServe(os.Args[1], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/memory" {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Content-Length", size)
			if r.Method != http.MethodHead {
				_, _ = w.Write(body)
			}
			return
		}
		http.ServeFile(w, r, file)
	})))
}

// Command servefile serves one file with http.ServeFile: the throughput
// ceiling lifeboat's cache hits are measured against in `make bench`.
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: servefile ADDR FILE")
	}
	file := os.Args[2]
	log.Fatal(http.ListenAndServe(os.Args[1], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, file)
	})))
}

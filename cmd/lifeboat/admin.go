package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/maintenance"
)

// adminHandler serves the admin API on --admin-listen (loopback by
// default): what `lifeboat ls`, `gc`, `verify` and `prefetch` use against a
// running lifeboat. Each endpoint is one call of the maintenance service,
// the same the commands make on a data directory no lifeboat holds.
//
//	GET  /admin/images                  the cached images (JSON)
//	POST /admin/gc?dry-run=true         an eviction pass now (JSON report)
//	POST /admin/verify?repair=true      re-hash every blob (JSON report)
//	POST /admin/prefetch                {"ref": ..., "platforms": [...], "pin": bool}: progress lines, then a JSON result
//	POST /admin/unpin?ref=...           remove a pin made by prefetch --pin
func adminHandler(mux *http.ServeMux, svc *maintenance.Service) http.Handler {
	mux.HandleFunc("GET /admin/images", func(w http.ResponseWriter, r *http.Request) {
		imgs, err := svc.Images()
		writeJSON(w, imgs, err)
	})
	mux.HandleFunc("POST /admin/gc", func(w http.ResponseWriter, r *http.Request) {
		dry, _ := strconv.ParseBool(r.URL.Query().Get("dry-run"))
		rep, err := svc.Evict(r.Context(), dry)
		writeJSON(w, gcReport(rep, dry), err)
	})
	mux.HandleFunc("POST /admin/verify", func(w http.ResponseWriter, r *http.Request) {
		repair, _ := strconv.ParseBool(r.URL.Query().Get("repair"))
		rep, err := svc.Verify(r.Context(), repair)
		writeJSON(w, rep, err)
	})
	mux.HandleFunc("POST /admin/unpin", func(w http.ResponseWriter, r *http.Request) {
		found, err := svc.Unpin(r.URL.Query().Get("ref"))
		writeJSON(w, map[string]bool{"removed": found}, err)
	})
	mux.HandleFunc("POST /admin/prefetch", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			maintenance.PrefetchItem
			Pin bool `json:"pin"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		flusher, _ := w.(http.Flusher)
		out := bufio.NewWriter(w)
		progress := func(line string) {
			fmt.Fprintln(out, line)
			out.Flush()
			if flusher != nil {
				flusher.Flush()
			}
		}
		res, err := svc.PrefetchAndPin(r.Context(), req.PrefetchItem, req.Pin, progress)
		result := map[string]any{"result": res}
		if err != nil {
			result["error"] = err.Error()
		}
		line, _ := json.Marshal(result)
		progress(string(line))
	})
	return requireAdminHeader(mux)
}

// adminHeader must be on every admin request. A web page cannot add a
// custom header to a cross-origin request without a CORS preflight, which
// the admin API never grants: so a browser on the node cannot drive it
// with a simple form POST.
const adminHeader = "Lifeboat-Admin"

func requireAdminHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(adminHeader) == "" {
			http.Error(w, "the admin API needs the "+adminHeader+" header (lifeboat's admin commands send it)", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// gcJSON is the report of `lifeboat gc`, in JSON.
type gcJSON struct {
	DryRun      bool            `json:"dryRun"`
	SizeBefore  int64           `json:"sizeBefore"`
	SizeAfter   int64           `json:"sizeAfter"`
	Needed      int64           `json:"needed"`
	FreeBefore  int64           `json:"freeBefore"`
	Removed     []cache.Evicted `json:"removed"`
	Tags        []string        `json:"tags"`
	DurationSec float64         `json:"durationSeconds"`
}

func gcReport(r cache.EvictReport, dry bool) gcJSON {
	return gcJSON{DryRun: dry, SizeBefore: r.SizeBefore, SizeAfter: r.SizeAfter, Needed: r.Needed, FreeBefore: r.FreeBefore,
		Removed: r.Removed, Tags: r.Tags, DurationSec: r.Duration.Seconds()}
}

func writeJSON(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

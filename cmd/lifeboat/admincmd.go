package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/maintenance"
)

// adminFlags are the flags every admin command shares. A command runs on
// the data directory when no lifeboat holds it, and through the running
// lifeboat's admin endpoint when one does.
type adminFlags struct {
	fs      *flag.FlagSet
	dataDir string
	admin   string
	output  string
}

func newAdminFlags(name, args, summary string, stderr io.Writer) *adminFlags {
	a := &adminFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	a.fs.SetOutput(stderr)
	a.fs.StringVar(&a.dataDir, "data-dir", envOr("LIFEBOAT_DATA_DIR", "./lifeboat-data"), "data directory, used directly when no lifeboat runs on it (env LIFEBOAT_DATA_DIR)")
	a.fs.StringVar(&a.admin, "admin", envOr("LIFEBOAT_ADMIN", "http://127.0.0.1:9091"), "admin endpoint (serve's --admin-listen) of the lifeboat that holds the data directory (env LIFEBOAT_ADMIN)")
	a.fs.StringVar(&a.output, "o", "table", "output: table or json")
	a.fs.Usage = func() {
		fmt.Fprintf(a.fs.Output(), "Usage: lifeboat %s [flags] %s\n\n%s\n\nFlags:\n", name, args, summary)
		a.fs.PrintDefaults()
	}
	return a
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func (a *adminFlags) parse(args []string) error {
	if err := a.fs.Parse(args); err != nil {
		return err
	}
	if a.output != "table" && a.output != "json" {
		return fmt.Errorf("-o %q: must be table or json", a.output)
	}
	return nil
}

// openOrRemote opens the data directory, or returns nil when a running
// lifeboat holds it (then the admin endpoint is used).
func (a *adminFlags) openOrRemote() (*cache.Store, error) {
	if _, err := os.Stat(a.dataDir); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", a.dataDir, err)
	}
	s, err := cache.Open(a.dataDir, cache.Options{LockTimeout: 200 * time.Millisecond})
	if errors.Is(err, cache.ErrLocked) {
		return nil, nil
	}
	return s, err
}

// call sends one admin request to a running lifeboat.
func (a *adminFlags) call(ctx context.Context, method, path string, body any, timeout time.Duration) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(a.admin, "/")+path, rd)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("the data directory is in use, and its lifeboat does not answer on --admin %s: %w", a.admin, err)
	}
	respBody := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{respBody, closerFunc(func() error { cancel(); return respBody.Close() })}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("admin %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (a *adminFlags) remoteJSON(ctx context.Context, method, path string, v any) error {
	resp, err := a.call(ctx, method, path, nil, 30*time.Minute)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func short(d fmt.Stringer) string {
	s := d.String()
	if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
		return s[:i+13]
	}
	return s
}

// ls: lifeboat ls
func ls(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("ls", "", "List the cached images: tags, size, last access, pinned, and when upstream last confirmed a tag.", stderr)
	if err := a.parse(args); err != nil {
		return err
	}
	var imgs []cache.Image
	s, err := a.openOrRemote()
	switch {
	case err != nil:
		return err
	case s != nil:
		defer s.Close()
		if imgs, err = maintenance.New(s, maintenance.Options{}).Images(); err != nil {
			return err
		}
	default:
		if err := a.remoteJSON(ctx, http.MethodGet, "/admin/images", &imgs); err != nil {
			return err
		}
	}
	if a.output == "json" {
		return printJSON(stdout, imgs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tBLOBS\tLAST ACCESS\tCONFIRMED\tPINNED")
	for _, img := range imgs {
		name := strings.Join(img.Tags, ",")
		if name == "" {
			name = "<by digest>"
		}
		confirmed := "-"
		if !img.Confirmed.IsZero() {
			confirmed = img.Confirmed.UTC().Format(time.RFC3339)
		}
		pinned := "-"
		if len(img.Pinned) > 0 {
			pinned = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", name, short(img.Digest), humanBytes(img.Size), img.Blobs,
			img.LastAccess.UTC().Format(time.RFC3339), confirmed, pinned)
	}
	return tw.Flush()
}

// gc: lifeboat gc
func gc(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("gc", "", "Evict now, as serve does every minute: orphans first, then least recently used images, until under --max-size and above --min-free-disk. Pinned and recently used images are kept.", stderr)
	dry := a.fs.Bool("dry-run", false, "report what would be evicted, remove nothing")
	maxSize := a.fs.String("max-size", envOr("LIFEBOAT_MAX_SIZE", "0"), "cap, when run on the data directory (env LIFEBOAT_MAX_SIZE); a running lifeboat uses its own")
	minFree := a.fs.String("min-free-disk", envOr("LIFEBOAT_MIN_FREE_DISK", "10%"), "free-disk floor, when run on the data directory (env LIFEBOAT_MIN_FREE_DISK)")
	if err := a.parse(args); err != nil {
		return err
	}
	var rep gcJSON
	s, err := a.openOrRemote()
	switch {
	case err != nil:
		return err
	case s != nil:
		defer s.Close()
		size, err := parseSize(*maxSize)
		if err != nil {
			return fmt.Errorf("--max-size: %w", err)
		}
		floor, err := parseDiskFloor(*minFree)
		if err != nil {
			return fmt.Errorf("--min-free-disk: %w", err)
		}
		svc := maintenance.New(s, maintenance.Options{
			Eviction: maintenance.EvictionOptions{MaxSize: size, MinFree: floor.Bytes, MinFreeFraction: floor.Fraction},
		})
		r, err := svc.Evict(ctx, *dry)
		if err != nil {
			return err
		}
		rep = gcReport(r, *dry)
	default:
		if err := a.remoteJSON(ctx, http.MethodPost, fmt.Sprintf("/admin/gc?dry-run=%t", *dry), &rep); err != nil {
			return err
		}
	}
	if a.output == "json" {
		return printJSON(stdout, rep)
	}
	verb := "evicted"
	if rep.DryRun {
		verb = "would evict"
	}
	for _, e := range rep.Removed {
		fmt.Fprintf(stdout, "%s %s (%s, %s)\n", verb, e.Digest, humanBytes(e.Size), e.Reason)
	}
	fmt.Fprintf(stdout, "%s %d blobs, %s of %s needed; cache %s -> %s\n", verb, len(rep.Removed),
		humanBytes(rep.SizeBefore-rep.SizeAfter), humanBytes(max(rep.Needed, 0)), humanBytes(rep.SizeBefore), humanBytes(rep.SizeAfter))
	return nil
}

// verify: lifeboat verify
func verify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("verify", "", "Re-hash every cached blob and report any whose bytes no longer match its digest. Exit status 3 when damage was found.", stderr)
	repair := a.fs.Bool("repair", false, "remove damaged blobs so they are fetched again")
	if err := a.parse(args); err != nil {
		return err
	}
	var rep cache.VerifyReport
	s, err := a.openOrRemote()
	switch {
	case err != nil:
		return err
	case s != nil:
		defer s.Close()
		if rep, err = maintenance.New(s, maintenance.Options{}).Verify(ctx, *repair); err != nil {
			return err
		}
	default:
		if err := a.remoteJSON(ctx, http.MethodPost, fmt.Sprintf("/admin/verify?repair=%t", *repair), &rep); err != nil {
			return err
		}
	}
	if a.output == "json" {
		if err := printJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		for _, d := range rep.Damaged {
			action := ""
			if d.Removed {
				action = " (removed)"
			}
			fmt.Fprintf(stdout, "DAMAGED %s: %s%s\n", d.Digest, d.Problem, action)
		}
		fmt.Fprintf(stdout, "checked %d blobs (%s): %d damaged\n", rep.Checked, humanBytes(rep.Bytes), len(rep.Damaged))
	}
	if len(rep.Damaged) > 0 {
		return errDamaged
	}
	return nil
}

// errDamaged makes verify exit 3 (damage found) rather than 1 (failure).
var errDamaged = errors.New("damaged blobs found")

// prefetch: lifeboat prefetch REF...
func prefetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("prefetch", "REF...", "Fetch images into the cache: each image (for a multi-platform index, only the --platform children) and all its blobs.\nThrough a running lifeboat when one holds the data directory; otherwise directly, with serve's settings (--config, LIFEBOAT_* env).", stderr)
	platforms := a.fs.String("platform", "", "comma-separated os/arch[/variant] for indexes (default: linux/<this machine's arch>)")
	pin := a.fs.Bool("pin", false, "pin the images so they are never evicted")
	config := a.fs.String("config", os.Getenv("LIFEBOAT_CONFIG"), "serve's config file, for the upstreams when no lifeboat runs (env LIFEBOAT_CONFIG)")
	if err := a.parse(args); err != nil {
		return err
	}
	if a.fs.NArg() == 0 {
		return errors.New("no image reference given; e.g. lifeboat prefetch docker.io/library/alpine:3.20")
	}
	var plats []string
	if *platforms != "" {
		plats = strings.Split(*platforms, ",")
	}
	if err := os.MkdirAll(a.dataDir, 0o755); err != nil {
		return err
	}
	s, err := a.openOrRemote()
	if err != nil {
		return err
	}
	if s != nil {
		defer s.Close()
		return prefetchHere(ctx, a, s, *config, plats, *pin, stdout, stderr)
	}
	failed := 0
	for _, ref := range a.fs.Args() {
		resp, err := a.call(ctx, http.MethodPost, "/admin/prefetch", map[string]any{"ref": ref, "platforms": plats, "pin": *pin}, 2*time.Hour)
		if err != nil {
			return err
		}
		var last string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			last = sc.Text()
			if !strings.HasPrefix(last, "{") && a.output == "table" {
				fmt.Fprintln(stdout, last)
			}
		}
		resp.Body.Close()
		var result struct {
			Result maintenance.PrefetchResult `json:"result"`
			Error  string                     `json:"error"`
		}
		if err := json.Unmarshal([]byte(last), &result); err != nil {
			return fmt.Errorf("prefetch %s: the admin endpoint's answer ended early", ref)
		}
		if !reportPrefetch(a, ref, result.Result, result.Error, stdout, stderr) {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d images failed", failed, a.fs.NArg())
	}
	return nil
}

// prefetchHere prefetches with a proxy of its own on the data directory.
func prefetchHere(ctx context.Context, a *adminFlags, s *cache.Store, config string, plats []string, pin bool, stdout, stderr io.Writer) error {
	var cfgArgs []string
	if config != "" {
		cfgArgs = []string{"--config", config}
	}
	cfg, err := loadServeConfig(cfgArgs, stderr)
	if err != nil {
		return err
	}
	svc, err := cfg.newServices(s, newLogger(cfg, stderr), nil, nil)
	if err != nil {
		return err
	}
	defer svc.Close()
	failed := 0
	for _, ref := range a.fs.Args() {
		progress := func(line string) {
			if a.output == "table" {
				fmt.Fprintln(stdout, line)
			}
		}
		res, err := svc.maintenance.PrefetchAndPin(ctx, maintenance.PrefetchItem{Ref: ref, Platforms: plats}, pin, progress)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if !reportPrefetch(a, ref, res, msg, stdout, stderr) {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d images failed", failed, a.fs.NArg())
	}
	return nil
}

// reportPrefetch prints one image's outcome and reports success.
func reportPrefetch(a *adminFlags, ref string, res maintenance.PrefetchResult, errMsg string, stdout, stderr io.Writer) bool {
	if a.output == "json" {
		out := map[string]any{"result": res}
		if errMsg != "" {
			out["error"] = errMsg
		}
		_ = printJSON(stdout, out)
	}
	if errMsg != "" {
		fmt.Fprintf(stderr, "prefetch %s: %s\n", ref, errMsg)
		return false
	}
	if a.output == "table" {
		fmt.Fprintf(stdout, "%s: %s, %d blobs, %s\n", ref, res.Digest, res.Blobs, humanBytes(res.Bytes))
	}
	return true
}

// unpin: lifeboat unpin REF...
func unpin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("unpin", "REF...", "Remove pins made by `lifeboat prefetch --pin` (the images become evictable again).", stderr)
	if err := a.parse(args); err != nil {
		return err
	}
	if a.fs.NArg() == 0 {
		return errors.New("no image reference given")
	}
	s, err := a.openOrRemote()
	if err != nil {
		return err
	}
	if s != nil {
		defer s.Close()
	}
	for _, ref := range a.fs.Args() {
		var found bool
		if s != nil {
			if found, err = maintenance.New(s, maintenance.Options{}).Unpin(ref); err != nil {
				return err
			}
		} else {
			var res map[string]bool
			if err := a.remoteJSON(ctx, http.MethodPost, "/admin/unpin?ref="+url.QueryEscape(ref), &res); err != nil {
				return err
			}
			found = res["removed"]
		}
		if !found {
			return fmt.Errorf("%s was not pinned with prefetch --pin", ref)
		}
		fmt.Fprintf(stdout, "unpinned %s\n", ref)
	}
	return nil
}

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
	fs       *flag.FlagSet
	settings settingFlags
	cfg      serveConfig // the settings the command takes, from settingsTable
	output   string
}

// newAdminFlags binds --data-dir, --admin and the command's own settings
// (flag names in settingsTable) besides -o.
func newAdminFlags(name, args, summary string, stderr io.Writer, settings ...string) *adminFlags {
	a := &adminFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	a.fs.SetOutput(stderr)
	a.settings = bindSettings(a.fs, settingsNamed(settingsTable(), append([]string{"data-dir", "admin"}, settings...)...), false)
	a.fs.StringVar(&a.output, "o", "table", "output: table or json")
	a.fs.Usage = func() {
		fmt.Fprintf(a.fs.Output(), "Usage: lifeboat %s [flags] %s\n\n%s\n\nFlags:\n", name, args, summary)
		a.fs.PrintDefaults()
	}
	return a
}

// parse resolves the settings: defaults < LIFEBOAT_* env < flags.
func (a *adminFlags) parse(args []string) error {
	if err := a.fs.Parse(args); err != nil {
		return err
	}
	cfg, err := withDefaults(a.settings.rows)
	if err != nil {
		return err
	}
	if err := a.settings.apply(&cfg); err != nil {
		return err
	}
	a.cfg = cfg
	switch {
	case a.cfg.DataDir == "":
		return errEmptyDataDir
	case a.output != "table" && a.output != "json":
		return fmt.Errorf("-o %q: must be table or json", a.output)
	}
	return nil
}

// onDataDir runs a command where the data directory is: onDisk with the
// directory opened when no lifeboat holds it, viaAdmin with the admin
// endpoint of the running lifeboat that does.
func (a *adminFlags) onDataDir(onDisk func(*cache.Store) error, viaAdmin func(adminClient) error) error {
	if a.adminOnly() {
		return viaAdmin(adminClient(a.cfg.AdminURL))
	}
	if _, err := os.Stat(a.cfg.DataDir); err != nil {
		return fmt.Errorf("--data-dir %s: %w", a.cfg.DataDir, err)
	}
	s, err := cache.Open(a.cfg.DataDir, cache.Options{LockTimeout: 200 * time.Millisecond})
	switch {
	case errors.Is(err, cache.ErrLocked):
		if err := viaAdmin(adminClient(a.cfg.AdminURL)); err != nil {
			return fmt.Errorf("--data-dir %s is in use by a lifeboat: %w", a.cfg.DataDir, err)
		}
		return nil
	case err != nil:
		return err
	}
	defer s.Close()
	return onDisk(s)
}

// adminOnly: --admin was given (flag or LIFEBOAT_ADMIN) and --data-dir
// was not, so the command goes to that lifeboat without looking for a data
// directory (which may be on another filesystem, or in a pod).
func (a *adminFlags) adminOnly() bool {
	return a.given("admin") && !a.given("data-dir")
}

// given reports whether a flag was set on the command line or in its
// LIFEBOAT_* variable.
func (a *adminFlags) given(name string) bool {
	set := false
	a.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	_, env := os.LookupEnv(envName(name))
	return set || env
}

// adminClient is the admin endpoint (--admin) of a running lifeboat.
type adminClient string

// call sends one admin request.
func (c adminClient) call(ctx context.Context, method, path string, body any, timeout time.Duration) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(string(c), "/")+path, rd)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set(adminHeader, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("no lifeboat answers on --admin %s: %w", c, err)
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

// callJSON sends one admin request and decodes its JSON answer into v.
func (c adminClient) callJSON(ctx context.Context, method, path string, v any) error {
	resp, err := c.call(ctx, method, path, nil, 30*time.Minute)
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
	err := a.onDataDir(func(s *cache.Store) (err error) {
		imgs, err = maintenance.New(s, maintenance.Options{}).Images()
		return err
	}, func(lb adminClient) error {
		return lb.callJSON(ctx, http.MethodGet, "/admin/images", &imgs)
	})
	if err != nil {
		return err
	}
	if a.output == "json" {
		return printJSON(stdout, imgs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tBLOBS\tLAST ACCESS\tCONFIRMED\tPINNED\tPRIVATE")
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
		private := "-"
		if img.Private {
			private = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", name, short(img.Digest), humanBytes(img.Size), img.Blobs,
			img.LastAccess.UTC().Format(time.RFC3339), confirmed, pinned, private)
	}
	return tw.Flush()
}

// gc: lifeboat gc
func gc(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("gc", "", "Evict now, as serve does every minute: orphans first, then least recently used images, until under --max-size and above --min-free-disk. Pinned and recently used images are kept.\nA running lifeboat evicts with its own limits; --max-size and --min-free-disk apply on the data directory.", stderr,
		"max-size", "min-free-disk")
	dry := a.fs.Bool("dry-run", false, "report what would be evicted, remove nothing")
	if err := a.parse(args); err != nil {
		return err
	}
	var rep gcJSON
	keepRecent, remote := a.cfg.evictionOptions().KeepRecent, false
	if keepRecent == 0 {
		keepRecent = maintenance.DefaultKeepRecent
	}
	err := a.onDataDir(func(s *cache.Store) error {
		// The same pass as serve's, with the limits of this command's
		// settings (--max-size, --min-free-disk, --config's eviction).
		r, err := maintenance.New(s, maintenance.Options{Eviction: a.cfg.evictionOptions()}).Evict(ctx, *dry)
		rep = gcReport(r, *dry)
		return err
	}, func(lb adminClient) error {
		if a.given("max-size") || a.given("min-free-disk") {
			return fmt.Errorf("--max-size and --min-free-disk apply to a data directory no lifeboat holds; the lifeboat at --admin %s evicts with its own limits (serve's --max-size and --min-free-disk): leave them out", lb)
		}
		remote = true
		return lb.callJSON(ctx, http.MethodPost, fmt.Sprintf("/admin/gc?dry-run=%t", *dry), &rep)
	})
	if err != nil {
		return err
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
	if why := nothingEvicted(rep, keepRecent, remote); why != "" {
		fmt.Fprintln(stdout, why)
	}
	return nil
}

// nothingEvicted says why a pass freed less than it needed, or nothing.
func nothingEvicted(rep gcJSON, keepRecent time.Duration, remote bool) string {
	freed := rep.SizeBefore - rep.SizeAfter
	switch {
	case rep.Needed <= 0 && len(rep.Removed) == 0:
		return "nothing to evict: the cache is under its cap (--max-size) and the disk above its free-disk floor (--min-free-disk)"
	case freed >= rep.Needed:
		return ""
	}
	keep := fmt.Sprintf("nothing accessed before %s (eviction.keepRecent %s)", time.Now().Add(-keepRecent).UTC().Format(time.RFC3339), keepRecent)
	if remote {
		keep = "nothing accessed within the running lifeboat's eviction.keepRecent (10m unless its config says otherwise)"
	}
	return fmt.Sprintf("%s short: what is left is pinned (lifeboat ls), or there is %s; while an upstream's circuit is open, eviction.keepDuringOutage keeps more",
		humanBytes(rep.Needed-freed), keep)
}

// verify: lifeboat verify
func verify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("verify", "", "Re-hash every cached blob and report any whose bytes no longer match its digest. Exit status 3 when damage was found.", stderr)
	repair := a.fs.Bool("repair", false, "remove damaged blobs so they are fetched again")
	if err := a.parse(args); err != nil {
		return err
	}
	var rep cache.VerifyReport
	err := a.onDataDir(func(s *cache.Store) (err error) {
		rep, err = maintenance.New(s, maintenance.Options{}).Verify(ctx, *repair)
		return err
	}, func(lb adminClient) error {
		return lb.callJSON(ctx, http.MethodPost, fmt.Sprintf("/admin/verify?repair=%t", *repair), &rep)
	})
	if err != nil {
		return err
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
	a := newAdminFlags("prefetch", "REF...", "Fetch images into the cache: each image (for a multi-platform index, only the --platform children) and all its blobs.\nThrough a running lifeboat when one holds the data directory; otherwise directly, with serve's settings (--config, LIFEBOAT_* env).", stderr,
		"config")
	platforms := a.fs.String("platform", "", "comma-separated os/arch[/variant] for indexes (default: linux/<this machine's arch>)")
	pin := a.fs.Bool("pin", false, "pin the images so they are never evicted")
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
	if !a.adminOnly() {
		if err := os.MkdirAll(a.cfg.DataDir, 0o755); err != nil {
			return err
		}
	}
	return a.onDataDir(func(s *cache.Store) error {
		return prefetchHere(ctx, a, s, plats, *pin, stdout, stderr)
	}, func(lb adminClient) error {
		return prefetchEach(a, stdout, stderr, func(ref string) (maintenance.PrefetchResult, string, error) {
			return prefetchVia(ctx, lb, a.output, ref, plats, *pin, stdout)
		})
	})
}

// prefetchVia prefetches one image through a running lifeboat, passing its
// progress lines on.
func prefetchVia(ctx context.Context, lb adminClient, output, ref string, plats []string, pin bool, stdout io.Writer) (maintenance.PrefetchResult, string, error) {
	resp, err := lb.call(ctx, http.MethodPost, "/admin/prefetch", map[string]any{"ref": ref, "platforms": plats, "pin": pin}, 2*time.Hour)
	if err != nil {
		return maintenance.PrefetchResult{}, "", err
	}
	defer resp.Body.Close()
	var last string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		last = sc.Text()
		if !strings.HasPrefix(last, "{") && output == "table" {
			fmt.Fprintln(stdout, last)
		}
	}
	var result struct {
		Result maintenance.PrefetchResult `json:"result"`
		Error  string                     `json:"error"`
	}
	if err := json.Unmarshal([]byte(last), &result); err != nil {
		return maintenance.PrefetchResult{}, "", fmt.Errorf("prefetch %s: the admin endpoint's answer ended early", ref)
	}
	return result.Result, result.Error, nil
}

// prefetchHere prefetches with a proxy of its own on the data directory,
// configured as serve would be (--config, LIFEBOAT_* env).
func prefetchHere(ctx context.Context, a *adminFlags, s *cache.Store, plats []string, pin bool, stdout, stderr io.Writer) error {
	var cfgArgs []string
	if a.cfg.ConfigFile != "" {
		cfgArgs = []string{"--config", a.cfg.ConfigFile}
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
	progress := func(line string) {
		if a.output == "table" {
			fmt.Fprintln(stdout, line)
		}
	}
	return prefetchEach(a, stdout, stderr, func(ref string) (maintenance.PrefetchResult, string, error) {
		res, err := svc.maintenance.PrefetchAndPin(ctx, maintenance.PrefetchItem{Ref: ref, Platforms: plats}, pin, progress)
		if err != nil {
			return res, err.Error(), nil
		}
		return res, "", nil
	})
}

// prefetchEach prefetches every REF with one, which says the result or an
// image's failure, or fails itself (then the command stops); it reports
// each image and fails when any did.
func prefetchEach(a *adminFlags, stdout, stderr io.Writer, one func(ref string) (maintenance.PrefetchResult, string, error)) error {
	failed := 0
	for _, ref := range a.fs.Args() {
		res, msg, err := one(ref)
		if err != nil {
			return err
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
	return a.onDataDir(func(s *cache.Store) error {
		return unpinEach(a.fs.Args(), stdout, maintenance.New(s, maintenance.Options{}).Unpin)
	}, func(lb adminClient) error {
		return unpinEach(a.fs.Args(), stdout, func(ref string) (bool, error) {
			var res map[string]bool
			err := lb.callJSON(ctx, http.MethodPost, "/admin/unpin?ref="+url.QueryEscape(ref), &res)
			return res["removed"], err
		})
	})
}

// unpinEach removes each ref's pin with remove, which says whether there was one.
func unpinEach(refs []string, stdout io.Writer, remove func(ref string) (bool, error)) error {
	for _, ref := range refs {
		found, err := remove(ref)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%s was not pinned with prefetch --pin", ref)
		}
		fmt.Fprintf(stdout, "unpinned %s\n", ref)
	}
	return nil
}

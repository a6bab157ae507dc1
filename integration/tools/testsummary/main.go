// Command testsummary reads `go test -json` on stdin and prints what `go
// test` would (package lines, and the output of failed tests), then, with
// -skips FILE, appends each skipped test and its reason to FILE. With
// -report FILE... it prints the skipped tests of those files grouped by
// reason (the reasons name what to install), for `make test`'s last words.
// It exits 0: the caller keeps go test's own exit code.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

type event struct {
	Action, Package, Test, Output string
}

func main() {
	skips := flag.String("skips", "", "append skipped tests to this file")
	report := flag.Bool("report", false, "print the skipped tests in the files named as arguments")
	flag.Parse()
	if *report {
		printReport(os.Stdout, flag.Args())
		return
	}
	if err := stream(os.Stdin, os.Stdout, *skips); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
	}
}

// stream passes go test's output through as go test without -v prints it,
// and records the skipped tests.
func stream(in io.Reader, out io.Writer, skipsFile string) error {
	var skipped []string
	buf := map[string][]string{} // package/test -> output lines
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // not JSON: a build error
			continue
		}
		key := e.Package + " " + e.Test
		switch {
		case e.Test == "" && e.Output != "":
			fmt.Fprint(out, e.Output)
		case e.Action == "output":
			buf[key] = append(buf[key], e.Output)
		case e.Action == "fail":
			fmt.Fprint(out, strings.Join(buf[key], ""))
			delete(buf, key)
		case e.Action == "skip" && e.Test == "":
			// A package with no tests: nothing was skipped.
		case e.Action == "skip":
			skipped = append(skipped, fmt.Sprintf("%s\t%s\t%s", e.Package, e.Test, reason(buf[key])))
			delete(buf, key)
		case e.Action == "pass":
			delete(buf, key)
		}
	}
	if skipsFile == "" || len(skipped) == 0 {
		return sc.Err()
	}
	f, err := os.OpenFile(skipsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, strings.Join(skipped, "\n"))
	return err
}

// reason is what t.Skip said: the test's output but its === and --- lines.
func reason(lines []string) string {
	var out []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "===") || strings.HasPrefix(l, "---") {
			continue
		}
		if _, msg, ok := strings.Cut(l, ": "); ok && strings.Contains(l[:strings.Index(l, ": ")], "_test.go:") {
			l = msg
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return "(no reason given)"
	}
	return strings.Join(out, " ")
}

func printReport(out io.Writer, files []string) {
	byReason := map[string][]string{}
	n := 0
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(raw)) {
			parts := strings.SplitN(strings.TrimSpace(line), "\t", 3)
			if len(parts) != 3 {
				continue
			}
			n++
			pkg := parts[0][strings.LastIndex(parts[0], "/")+1:]
			byReason[parts[2]] = append(byReason[parts[2]], pkg+"."+parts[1])
		}
	}
	if n == 0 {
		fmt.Fprintln(out, "== no test skipped")
		return
	}
	fmt.Fprintf(out, "== %d tests skipped (CI=1 makes a missing tool a failure):\n", n)
	reasons := make([]string, 0, len(byReason))
	for r := range byReason {
		reasons = append(reasons, r)
	}
	slices.SortFunc(reasons, func(a, b string) int { return len(byReason[b]) - len(byReason[a]) })
	for _, r := range reasons {
		tests := byReason[r]
		shown := tests
		if len(shown) > 4 {
			shown = append(slices.Clone(shown[:4]), fmt.Sprintf("and %d more", len(tests)-4))
		}
		fmt.Fprintf(out, "  %3d  %s\n       (%s)\n", len(tests), r, strings.Join(shown, ", "))
	}
}

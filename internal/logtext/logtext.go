// Package logtext bounds what log lines echo from clients and upstreams.
package logtext

import "strconv"

// Clip returns s cut to n bytes, saying how long it was: a request line
// may be a megabyte long, and an upstream's error may quote its whole
// answer; a log line should not.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

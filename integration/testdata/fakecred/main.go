// Command fakecred is a fake kubelet credential provider plugin and a fake
// docker credential helper, by the name it is run as (docker-credential-*:
// a helper; anything else: a plugin). The directory FAKE_STATE holds its
// behaviour (mode: ok, hang, error; creds: user:pass; key and duration:
// the plugin's cacheKeyType and cacheDuration; match: its auth entry's key)
// and a line per run (calls).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func state(name string) string {
	b, _ := os.ReadFile(filepath.Join(os.Getenv("FAKE_STATE"), name))
	return strings.TrimSpace(string(b))
}

func main() {
	in, _ := io.ReadAll(os.Stdin)
	if f, err := os.OpenFile(filepath.Join(os.Getenv("FAKE_STATE"), "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		fmt.Fprintf(f, "%s %s\n", filepath.Base(os.Args[0]), strings.Join(os.Args[1:], " "))
		f.Close()
	}
	switch state("mode") {
	case "hang":
		time.Sleep(time.Hour)
	case "error":
		fmt.Fprintln(os.Stderr, "identity service unreachable")
		fmt.Println("identity service unreachable")
		os.Exit(1)
	}
	user, pass, _ := strings.Cut(state("creds"), ":")
	if strings.HasPrefix(filepath.Base(os.Args[0]), "docker-credential-") {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"ServerURL": string(in), "Username": user, "Secret": pass})
		return
	}
	var req struct{ APIVersion string }
	_ = json.Unmarshal(in, &req)
	resp := map[string]any{
		"kind": "CredentialProviderResponse", "apiVersion": req.APIVersion, "cacheKeyType": state("key"),
		"auth": map[string]any{state("match"): map[string]string{"username": user, "password": pass}},
	}
	if d := state("duration"); d != "" {
		resp["cacheDuration"] = d
	}
	_ = json.NewEncoder(os.Stdout).Encode(resp)
}

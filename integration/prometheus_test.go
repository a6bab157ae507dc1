package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const installPrometheus = "apt-get install -y prometheus"

// prometheus is a running Prometheus server (Debian's binary) on loopback.
type prometheus struct {
	URL  string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

// startPrometheus runs Prometheus with config (prometheus.yml's text; a
// relative rule file is read from dir) and a TSDB of its own in dir, on a
// free loopback port, until the test ends. Prometheus cannot listen on
// port 0, so a port is picked by binding and closing it, and picked again
// if something else took it in between.
func startPrometheus(t *testing.T, dir, config string) *prometheus {
	t.Helper()
	bin := requireTool(t, "prometheus", installPrometheus)
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o644))
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		p := &prometheus{URL: "http://" + addr, logs: &syncBuffer{}, done: make(chan error, 1)}
		p.cmd = exec.Command(bin, "--config.file="+cfg, "--web.listen-address="+addr,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("tsdb-%d", attempt)))
		p.cmd.Dir = dir
		p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
		require.NoError(t, p.cmd.Start())
		go func() { p.done <- p.cmd.Wait() }()
		err := p.waitReady(time.Minute)
		if err == nil {
			t.Cleanup(func() {
				p.stop(t)
				if t.Failed() {
					t.Logf("prometheus logs:\n%s", p.logs.String())
				}
			})
			return p
		}
		p.stop(t)
		if attempt < 5 && strings.Contains(p.logs.String(), "address already in use") {
			continue
		}
		t.Fatalf("prometheus did not start: %v\n%s", err, p.logs.String())
	}
}

// waitReady waits until /-/ready answers 200, or Prometheus exits.
func (p *prometheus) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(p.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("not ready after " + timeout.String())
}

// stop sends SIGTERM to Prometheus' PID and waits; SIGKILL after 30s.
func (p *prometheus) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("prometheus did not stop within 30s of SIGTERM")
	}
}

// promSample is one series of an instant query's result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant PromQL query now through the HTTP API. A query
// Prometheus refuses (it does not parse, say) is an error naming why.
func (p *prometheus) query(q string) ([]promSample, error) {
	resp, err := http.Get(p.URL + "/api/v1/query?" + url.Values{"query": {q}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", q, resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s: %s", q, resp.Status, body.Error)
	}
	switch body.Data.ResultType {
	case "vector":
		var out []promSample
		err := json.Unmarshal(body.Data.Result, &out)
		return out, err
	case "scalar":
		var v [2]any
		err := json.Unmarshal(body.Data.Result, &v)
		return []promSample{{Value: v}}, err
	}
	return nil, fmt.Errorf("%s: result type %s", q, body.Data.ResultType)
}

// promAlert is one alert of /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"` // pending or firing
}

func (p *prometheus) alerts() ([]promAlert, error) {
	resp, err := http.Get(p.URL + "/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("/api/v1/alerts: %s", resp.Status)
	}
	return body.Data.Alerts, nil
}

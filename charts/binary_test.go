package charts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binDir holds the lifeboat binary built once for every test that runs it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var buildLifeboat = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "lifeboat-chart-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "lifeboat")
	// go test puts its own go first on PATH. Build in the repository root
	// with GOWORK=off: lifeboat's own go.mod, as the Dockerfile builds it.
	build := exec.Command("go", "build", "-o", bin, "./cmd/lifeboat")
	build.Dir = ".."
	build.Env = append(os.Environ(), "GOWORK=off")
	out, err := build.CombinedOutput()
	if err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	return bin, nil
})

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string {
	return "go build ./cmd/lifeboat (in ..): " + e.err.Error() + "\n" + e.out
}

// lifeboatBinary is ../cmd/lifeboat, built once.
func lifeboatBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildLifeboat()
	require.NoError(t, err)
	return bin
}

// testCA is a self-signed CA certificate in PEM, for an upstream's caFile.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lifeboat chart test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

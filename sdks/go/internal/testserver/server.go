// Package testserver starts a real `twofold serve` process for the SDK's tests: a fresh
// in-memory database, ephemeral ports, and an HTTP webhook stand-in for the SMS provider.
package testserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// AdminKey is the admin API key every test server accepts.
const AdminKey = "go-sdk-test-admin-key-0123456789abcdef"

// Server is a running `twofold serve`; it is stopped when the test ends.
type Server struct {
	// Public and Admin are the listeners' host:port.
	Public string
	Admin  string
	// SMS receives the codes the server sends by SMS.
	SMS *SMSInbox
}

const config = `dsn: memory
serve:
  public: {host: 127.0.0.1, port: 0, base_url: "http://localhost"}
  admin: {host: 127.0.0.1, port: 0, api_keys: [%q]}
selfservice: {methods: {code: {mfa_enabled: true}}}
courier:
  channels:
    - id: sms
      type: http
      request_config:
        url: %q
        method: POST
        body: '{"to": "{{ template_data.to }}", "code": "{{ template_data.code }}", "text": {{ body | tojson }}}'
  sms_sender: sms
  email_sender: log
log: {format: json}
`

// Start runs a new server for t. Each call gets its own process, ports and database, so tests
// may run in parallel.
func Start(t testing.TB) *Server {
	t.Helper()
	binary := binaryPath(t)
	sms := newSMSInbox(t)

	path := filepath.Join(t.TempDir(), "twofold.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, config, AdminKey, sms.URL()), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(binary, "serve", "--config", path)
	// Only PATH: the server reads configuration overrides (DSN, SERVE_*, TWOFOLD_*) and RUST_LOG
	// from its environment, and whatever the test runner has set must not change this server.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stderr lockedBuffer
	log := &serverLog{ready: make(chan [2]string, 1)}
	cmd.Stdout, cmd.Stderr = log, &stderr
	// Wait must not hang on output pipes that something else inherited after the kill.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", binary, err)
	}

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stop(cmd, exited)
		if t.Failed() {
			t.Logf("twofold stdout:\n%s\ntwofold stderr:\n%s", log.String(), stderr.String())
		}
	})

	select {
	case addresses := <-log.ready:
		return &Server{Public: addresses[0], Admin: addresses[1], SMS: sms}
	case err := <-exited:
		exited <- err // for the cleanup
		t.Fatalf("twofold exited before serving: %v (its output follows)", err)
	case <-time.After(30 * time.Second):
		t.Fatal("twofold did not log \"twofold is serving\" within 30s (its output follows)")
	}
	return nil
}

// serverLog keeps the server's JSON log for failure reports and reports the bound addresses
// from the "twofold is serving" line once.
type serverLog struct {
	lockedBuffer
	ready    chan [2]string
	partial  []byte
	reported bool
}

func (l *serverLog) Write(p []byte) (int, error) {
	_, _ = l.lockedBuffer.Write(p)
	l.partial = append(l.partial, p...)
	for {
		end := bytes.IndexByte(l.partial, '\n')
		if end < 0 {
			return len(p), nil
		}
		line := l.partial[:end]
		l.partial = l.partial[end+1:]
		if l.reported {
			continue
		}
		var entry struct {
			Fields struct {
				Message string `json:"message"`
				Public  string `json:"public"`
				Admin   string `json:"admin"`
			} `json:"fields"`
		}
		if json.Unmarshal(line, &entry) == nil && entry.Fields.Message == "twofold is serving" {
			l.ready <- [2]string{entry.Fields.Public, entry.Fields.Admin}
			l.reported = true
		}
	}
}

// stop asks the server to drain (SIGTERM) and kills it if it has not exited after a while.
func stop(cmd *exec.Cmd, exited chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// binaryPath finds the server binary: $TWOFOLD_BIN, else target/debug/twofold of the Cargo
// workspace two levels above this module's go.mod.
func binaryPath(t testing.TB) string {
	t.Helper()
	binary := os.Getenv("TWOFOLD_BIN")
	if binary == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		binary = filepath.Join(root, "..", "..", "target", "debug", "twofold")
	}
	binary, err := filepath.Abs(binary)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(binary); err != nil || info.IsDir() {
		t.Fatalf("no twofold server binary at %s: build it with cargo build (in the repository root), or set TWOFOLD_BIN", binary)
	}
	return binary
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's working directory; set TWOFOLD_BIN")
		}
		dir = parent
	}
}

// lockedBuffer is written by the process's output goroutines and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.String())
}

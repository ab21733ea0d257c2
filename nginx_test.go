package passwordless

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitListening waits until something accepts connections on addr.
func waitListening(t *testing.T, addr string, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %s", addr, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startNginx runs Debian's nginx on loopback with a server block, until
// the test ends, and returns its base URL. Without nginx it skips
// locally and fails in CI (.ci/run installs it).
func startNginx(t *testing.T, server func(port int) string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no nginx: .ci/run must install it")
		}
		t.Skip("no nginx: install Debian's nginx to run the nginx test")
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, server(port))
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", file, "-e", filepath.Join(dir, "error.log"))
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	logs := func() string {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return out.String() + string(log)
	}
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx said:\n%s", logs())
		}
	})
	return fmt.Sprintf("http://localhost:%d", port)
}

// TestNginxAuthRequest puts the app behind Debian's nginx, configured as
// the README says, with auth_request asking the check.
func TestNginxAuthRequest(t *testing.T) {
	e := proxyEnv(t)
	server := readmeBlock(t, "nginx", "auth_request")
	base := startNginx(t, func(port int) string {
		return replaceAll(t, server,
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
			"127.0.0.1:8080", strings.TrimPrefix(e.upstream.URL, "http://"),
			"127.0.0.1:9000", fmt.Sprintf("127.0.0.1:%d", testPort))
	})
	proxyStory(t, e, base)
}

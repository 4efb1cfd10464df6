package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Envoy's start-up warning when no connection limit is configured.
const noConnLimitWarning = "no configured limit to the number of allowed active"

// The bootstrap's connection limit holds in real Envoy: with
// --max-connections 5, five connections are served, further ones are
// closed as they arrive, the five keep working, and a slot freed by closing
// one is taken by a new connection.
func TestConnectionLimit(t *testing.T) {
	const limit = 5
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{BootstrapArgs: []string{"--max-connections", fmt.Sprint(limit)}})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	e.WaitFor("web reachable", 10*time.Second, "/", nil,
		func(code int, body string) bool { return code == http.StatusOK && body == "web-1" })
	if strings.Contains(e.Envoy.Output(), noConnLimitWarning) {
		t.Errorf("envoy warns that no connection limit is set:\n%s", e.Envoy.Output())
	}
	// The admin API's connections count against the limit too (they are
	// never refused): close the idle ones this test's helpers left open,
	// and touch neither Envoy's admin API nor its listener through a
	// pooled client until the end.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	var conns []*keepAliveConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Envoy sees closed connections go a moment after the client does.
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d connections served", limit), func() error {
		for len(conns) < limit {
			c, err := dialKeepAlive(e.Port)
			if err != nil {
				return err
			}
			if err := c.expectServed("/"); err != nil {
				c.Close()
				return fmt.Errorf("connection %d: %w", len(conns)+1, err)
			}
			conns = append(conns, c)
		}
		return nil
	})

	// Past the limit, new connections are closed without an answer.
	for i := range 3 {
		c, err := dialKeepAlive(e.Port)
		if err != nil {
			continue // refused outright: as good
		}
		code, body, err := c.get("/")
		c.Close()
		if err == nil {
			t.Fatalf("connection %d past the limit of %d: got %d %q; want it closed unanswered", i+1, limit, code, body)
		}
	}
	// The connections within the limit keep working.
	for i, c := range conns {
		if err := c.expectServed("/"); err != nil {
			t.Fatalf("connection %d within the limit, after others were refused: %v", i+1, err)
		}
	}
	// Closing one frees its slot for a new connection.
	conns[0].Close()
	conns = conns[1:]
	testenv.Eventually(t, 10*time.Second, "a new connection in the freed slot", func() error {
		c, err := dialKeepAlive(e.Port)
		if err != nil {
			return err
		}
		if err := c.expectServed("/"); err != nil {
			c.Close()
			return err
		}
		conns = append(conns, c)
		return nil
	})

	// At the limit still, the admin API answers (it is exempt), and Envoy
	// counted the refusals.
	name := "listener.127.0.0.1_" + fmt.Sprint(e.Port) + ".downstream_global_cx_overflow"
	if n, err := e.Envoy.Stat(name); err != nil || n < 3 {
		t.Errorf("envoy admin at the connection limit: %s = %d (%v); want at least 3, the refused connections", name, n, err)
	}
}

// keepAliveConn is one HTTP/1.1 connection to Envoy, reused for several
// requests, so that the test decides how many connections are open.
type keepAliveConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialKeepAlive(port int) (*keepAliveConn, error) {
	c, err := net.DialTimeout("tcp", testenv.Addr(port), 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &keepAliveConn{c: c, r: bufio.NewReader(c)}, nil
}

func (k *keepAliveConn) Close() { k.c.Close() }

// get sends one request on the connection and reads the answer.
func (k *keepAliveConn) get(path string) (int, string, error) {
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: edge.test\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// expectServed sends one request and wants web-1's 200.
func (k *keepAliveConn) expectServed(path string) error {
	code, body, err := k.get(path)
	if err != nil {
		return err
	}
	if code != http.StatusOK || body != "web-1" {
		return fmt.Errorf("got %d %q; want 200 web-1", code, body)
	}
	return nil
}

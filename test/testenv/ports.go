package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Ports are handed out from a range below Linux's ephemeral range
// (32768-60999), so the kernel never gives one of them to an outgoing
// connection or to a listener on port 0, and above the fixed ports of
// `make demo` (10000-19901).
//
// Asking the kernel for port 0 and closing the listener, the usual trick, is
// not enough: the kernel hands the same port out again, and a CI run failed
// when a Consul agent and Switchyard in one test were both given 44685.
const (
	portLow  = 20000
	portHigh = 32000
)

var ports struct {
	mu     sync.Mutex
	handed map[int]bool
	locks  []*os.File // held open until the process exits
}

// FreePort returns a loopback port that no other FreePort caller, in this
// test process or in another one (go test runs packages in parallel), has
// been given, and that TCP and UDP could bind a moment ago (Consul's DNS and
// Serf ports use both).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := reservePort()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return p
}

func reservePort() (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.handed == nil {
		ports.handed = map[int]bool{}
	}
	dir := filepath.Join(os.TempDir(), "switchyard-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, err
	}
	n := portHigh - portLow
	start := rand.IntN(n)
	for i := range n {
		p := portLow + (start+i)%n
		if ports.handed[p] || !bindable(p) {
			continue
		}
		lock, ok := lockPort(dir, p)
		if !ok {
			continue
		}
		ports.handed[p] = true
		ports.locks = append(ports.locks, lock)
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d", portLow, portHigh)
}

// lockPort takes an exclusive flock on the port's file. The kernel drops it
// when the process exits, however it exits, so a crashed test run leaves no
// port reserved.
func lockPort(dir string, p int) (*os.File, bool) {
	// Read-only: flock needs no write access, so a file another user
	// created (in a shared temporary directory) still works.
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

func bindable(p int) bool {
	addr := Addr(p)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}

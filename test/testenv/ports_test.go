package testenv

import "testing"

func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 300 {
		p := FreePort(t)
		if p < portLow || p >= portHigh {
			t.Fatalf("got port %d; want one in %d-%d, outside the kernel's ephemeral range", p, portLow, portHigh)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

// Another test process holding a port's lock keeps it from this one: flock
// locks on two opens of one file conflict even within a process, which
// stands in for the second process here.
func TestPortLockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	first, ok := lockPort(dir, 25000)
	if !ok {
		t.Fatal("could not take a fresh lock")
	}
	if second, ok := lockPort(dir, 25000); ok {
		second.Close()
		t.Fatal("took a lock another holder has")
	}
	first.Close()
	again, ok := lockPort(dir, 25000)
	if !ok {
		t.Fatal("a released lock cannot be taken again")
	}
	again.Close()
}

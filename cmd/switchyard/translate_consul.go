package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
)

// liveConsul is translate's view of Consul: with --consul-address (or
// SWITCHYARD_CONSUL_ADDRESS) it reads the services the policy routes to
// once, as serve would, so the printed clusters carry their live endpoints.
type liveConsul struct {
	v       *viper.Viper
	timeout time.Duration
}

// consulFlags defines serve's consul.* settings on translate (the same
// flags and SWITCHYARD_CONSUL_* variables) and --consul-timeout.
func consulFlags(cmd *cobra.Command) *liveConsul {
	l := &liveConsul{v: viper.New()}
	bindSettingsWhere(l.v, cmd.Flags(), func(key string) bool { return strings.HasPrefix(key, "consul.") })
	cmd.Flags().DurationVar(&l.timeout, "consul-timeout", 30*time.Second, "with --consul-address: how long to wait for Consul's answers")
	return l
}

// enabled reports whether translate should read Consul: its address was
// given as a flag or in the environment.
func (l *liveConsul) enabled(cmd *cobra.Command) bool {
	return cmd.Flags().Changed("consul-address") || os.Getenv(envName("consul.address")) != ""
}

// snapshot reads, once, the health of every service set routes to. It
// fails naming the address when Consul does not answer within the timeout.
func (l *liveConsul) snapshot(ctx context.Context, set *policy.Set) (*registry.Snapshot, error) {
	cfg := consulConfig(l.v)
	var mu sync.Mutex
	var lastErr error
	w, err := registry.NewWatcher(cfg, nil, registry.Hooks{WatchError: func(_ string, err error) {
		mu.Lock()
		lastErr = err
		mu.Unlock()
	}})
	if err != nil {
		return nil, err
	}
	w.Want(translator.Services(set))
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	got := make(chan *registry.Snapshot, 1)
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(s *registry.Snapshot) {
			select {
			case got <- s:
			default:
			}
			cancel() // the first snapshot is the full read
		})
	}()
	err = <-done
	select {
	case s := <-got:
		return s, nil
	default:
	}
	mu.Lock()
	if lastErr != nil {
		err = lastErr
	}
	mu.Unlock()
	if err == nil {
		err = ctx.Err()
	}
	return nil, fmt.Errorf("consul at %s gave no full answer within %s (--consul-timeout): %v", cfg.Address, l.timeout, err)
}

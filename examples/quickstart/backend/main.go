// Command backend is the quick start's sample service: an HTTP server that
// answers every request with its instance name, and a health endpoint for
// Consul's HTTP check that can be switched off to watch Envoy route around
// a failed instance.
//
//	backend -name web-1 -addr 127.0.0.1:18081
//	curl -X POST 127.0.0.1:18081/admin/fail      # /health answers 503 from now on
//	curl -X POST 127.0.0.1:18081/admin/recover   # and 200 again
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

func main() {
	name := flag.String("name", "backend", "instance name, echoed in every response")
	addr := flag.String("addr", "127.0.0.1:18081", "listen address")
	flag.Parse()

	var failing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", *name, r.URL.Path)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			http.Error(w, "failing (POST /admin/recover to heal)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /admin/fail", func(w http.ResponseWriter, _ *http.Request) {
		failing.Store(true)
		fmt.Fprintf(w, "%s: health check now fails\n", *name)
	})
	mux.HandleFunc("POST /admin/recover", func(w http.ResponseWriter, _ *http.Request) {
		failing.Store(false)
		fmt.Fprintf(w, "%s: health check passes again\n", *name)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("%s listening on %s", *name, *addr)
	log.Fatal(srv.ListenAndServe())
}

// Command fixedbody serves one file as /metrics: the ceiling a Go HTTP
// server reaches on this machine, for scripts/bench to compare against.
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: fixedbody ADDRESS FILE")
	}
	body, err := os.ReadFile(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}

//go:build race

package main

// raceEnabled: the race detector keeps shadow memory that only grows, so
// resident memory says nothing about the exporter under -race.
const raceEnabled = true

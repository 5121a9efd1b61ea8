package main

import (
	"testing"
	"time"
)

// TestSoakShort runs the whole soak for a second: every kind of producer,
// failing and stalling Sends, the pause on backlog, and the final check.
func TestSoakShort(t *testing.T) {
	if err := run(time.Second, 500*time.Millisecond, false, 256<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
}

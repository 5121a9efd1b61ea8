package vinequeue

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestDefaultSizeOfRefuses: New refuses, naming SizeOf, an item type the
// default SizeOf cannot size (internal/engine's sizeof tests check the sizes
// it computes).
func TestDefaultSizeOfRefuses(t *testing.T) {
	type header struct{ Key, Value string }
	type withHeaders struct {
		Value   []byte
		Headers []header
	}
	type nested struct {
		ID    int
		Inner struct{ P *int }
	}
	cases := []struct {
		name string
		new  func() error
		part string
	}{
		{"pointer", func() error { _, err := New(Config[*int]{Send: noSend[*int]}); return err }, "*int"},
		{"slice of structs", func() error { _, err := New(Config[withHeaders]{Send: noSend[withHeaders]}); return err }, "Headers"},
		{"nested pointer", func() error { _, err := New(Config[nested]{Send: noSend[nested]}); return err }, "Inner.P"},
		{"map", func() error { _, err := New(Config[map[string]int]{Send: noSend[map[string]int]}); return err }, "map"},
		{"interface", func() error { _, err := New(Config[any]{Send: noSend[any]}); return err }, "interface"},
		{"slice of strings", func() error { _, err := New(Config[[]string]{Send: noSend[[]string]}); return err }, "[]string"},
		{"func field", func() error {
			_, err := New(Config[struct{ F func() }]{Send: noSend[struct{ F func() }]})
			return err
		}, "F"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.new()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
			for _, want := range []string{": SizeOf: set Config.SizeOf: cannot size", c.part} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not say %q", err, want)
				}
			}
		})
	}
	// With SizeOf set, the same type is fine.
	q, err := New(Config[withHeaders]{Send: noSend[withHeaders], SizeOf: func(withHeaders) int { return 1 }})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

func noSend[T any](context.Context, []T) error { return nil }

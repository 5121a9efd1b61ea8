package wal

// The core module keeps testify out of its direct requirements (DESIGN.md's
// dependency list), so these tests use this small stand-in with the same
// call shapes as testify's require: each failure stops the test.

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

type requirer struct{}

var require requirer

func msg(args []any) string {
	if len(args) == 0 {
		return ""
	}
	if f, ok := args[0].(string); ok {
		return ": " + fmt.Sprintf(f, args[1:]...)
	}
	return ": " + fmt.Sprint(args...)
}

func (requirer) NoError(t testing.TB, err error, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v%s", err, msg(args))
	}
}

func (requirer) ErrorIs(t testing.TB, err, target error, args ...any) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v is not %v%s", err, target, msg(args))
	}
}

func (requirer) ErrorContains(t testing.TB, err error, s string, args ...any) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), s) {
		t.Fatalf("error %v does not contain %q%s", err, s, msg(args))
	}
}

func (requirer) Equal(t testing.TB, want, got any, args ...any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("not equal%s\nwant: %#v\n got: %#v", msg(args), want, got)
	}
}

func (requirer) True(t testing.TB, v bool, args ...any) {
	t.Helper()
	if !v {
		t.Fatalf("want true%s", msg(args))
	}
}

func (requirer) False(t testing.TB, v bool, args ...any) {
	t.Helper()
	if v {
		t.Fatalf("want false%s", msg(args))
	}
}

func (requirer) Zero(t testing.TB, v any, args ...any) {
	t.Helper()
	if !reflect.ValueOf(v).IsZero() {
		t.Fatalf("want zero, got %v%s", v, msg(args))
	}
}

func (requirer) Len(t testing.TB, v any, n int, args ...any) {
	t.Helper()
	if l := reflect.ValueOf(v).Len(); l != n {
		t.Fatalf("length %d, want %d%s", l, n, msg(args))
	}
}

func (requirer) Empty(t testing.TB, v any, args ...any) {
	t.Helper()
	if l := reflect.ValueOf(v).Len(); l != 0 {
		t.Fatalf("length %d, want empty%s", l, msg(args))
	}
}

func (requirer) NotEmpty(t testing.TB, v any, args ...any) {
	t.Helper()
	if reflect.ValueOf(v).Len() == 0 {
		t.Fatalf("want non-empty%s", msg(args))
	}
}

func (requirer) Contains(t testing.TB, m, key any, args ...any) {
	t.Helper()
	if !reflect.ValueOf(m).MapIndex(reflect.ValueOf(key)).IsValid() {
		t.Fatalf("%v not in map%s", key, msg(args))
	}
}

func compare[T cmp.Ordered](t testing.TB, a, b T, ok func(int) bool, op string, args []any) {
	t.Helper()
	if !ok(cmp.Compare(a, b)) {
		t.Fatalf("want %v %s %v%s", a, op, b, msg(args))
	}
}

func (requirer) Greater(t testing.TB, a, b any, args ...any) {
	t.Helper()
	ordered(t, a, b, func(c int) bool { return c > 0 }, ">", args)
}

func (requirer) Less(t testing.TB, a, b any, args ...any) {
	t.Helper()
	ordered(t, a, b, func(c int) bool { return c < 0 }, "<", args)
}

func (requirer) LessOrEqual(t testing.TB, a, b any, args ...any) {
	t.Helper()
	ordered(t, a, b, func(c int) bool { return c <= 0 }, "<=", args)
}

func ordered(t testing.TB, a, b any, ok func(int) bool, op string, args []any) {
	t.Helper()
	switch x := a.(type) {
	case int:
		compare(t, x, b.(int), ok, op, args)
	case int64:
		compare(t, x, b.(int64), ok, op, args)
	case uint64:
		compare(t, x, b.(uint64), ok, op, args)
	default:
		t.Fatalf("unsupported type %T", a)
	}
}

package engine

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"
)

// reflectSize is the reference for the default SizeOf: a reflect walk of
// the value, adding the length of every string and []byte it finds.
func reflectSize(v reflect.Value) int {
	n := 0
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			n += v.Len()
		case reflect.Slice: // []byte: the only slices the default sizes
			n += v.Len()
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		}
	}
	walk(v)
	return int(v.Type().Size()) + n
}

// fill sets every string and []byte inside v to random lengths (some nil or
// empty) and every number to a random value.
func fill(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(string(make([]byte, r.IntN(300))))
	case reflect.Slice:
		switch r.IntN(4) {
		case 0:
			v.SetZero() // nil
		default:
			n := r.IntN(5000)
			v.SetBytes(make([]byte, n, n+r.IntN(100)))
		}
	case reflect.Struct:
		if v.Type() == timeType {
			v.Set(reflect.ValueOf(time.Unix(r.Int64N(1<<40), 0)))
			return
		}
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				fill(r, v.Field(i))
			}
		}
	case reflect.Array:
		for i := range v.Len() {
			fill(r, v.Index(i))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(r.Int64())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(r.Uint64())
	case reflect.Float32, reflect.Float64:
		v.SetFloat(r.Float64())
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 1)
	}
}

type sizeInner struct {
	Tag  string
	N    int16
	Blob []byte
}

type payload []byte

type sizeRecord struct {
	ID    uint64
	Key   []byte
	Value payload
	Topic string
	At    time.Time
	Flags [3]bool
	Inner sizeInner
	Tags  [4]string
	Pairs [2]sizeInner
	Grid  [2][3]string
	Ratio float64
	//lint:ignore U1000 set and sized through reflection: an unexported field's bytes count too
	private string
}

// checkSizes compares the default SizeOf of T with reflectSize over random
// values, and checks that sizing allocates nothing.
func checkSizes[T any](t *testing.T) {
	t.Helper()
	size, fixed, err := defaultSizeOf[T]()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		var v T
		fill(r, reflect.ValueOf(&v).Elem())
		want := reflectSize(reflect.ValueOf(v))
		if fixed > 0 {
			want = max(want, 1) // an item never weighs nothing
		}
		if got := size(v); got != want {
			t.Fatalf("SizeOf = %d, reflect walk %d, for %+v", got, want, v)
		}
		if fixed > 0 && fixed != want {
			t.Fatalf("fixed size %d, reflect walk %d", fixed, want)
		}
	}
	var v T
	fill(r, reflect.ValueOf(&v).Elem())
	if n := testing.AllocsPerRun(100, func() { size(v) }); n != 0 {
		t.Errorf("%v allocations per SizeOf", n)
	}
}

func TestDefaultSizeOfMatchesReflect(t *testing.T) {
	t.Run("record", checkSizes[sizeRecord])
	t.Run("bytes", checkSizes[[]byte])
	t.Run("string", checkSizes[string])
	t.Run("named bytes", checkSizes[payload])
	t.Run("array of strings", checkSizes[[5]string])
	t.Run("fixed struct", checkSizes[struct {
		A uint64
		B [16]byte
		C time.Time
	}])
	t.Run("uint64", checkSizes[uint64])
	t.Run("empty struct", checkSizes[struct{}])
}

// TestDefaultSizeOfCountsWhatItemsHold: issue 10's case, a record that
// holds more behind its fields than its header (which was all the default
// counted).
func TestDefaultSizeOfCountsWhatItemsHold(t *testing.T) {
	type rec struct {
		Key, Value []byte
		Topic      string
	}
	size, fixed, err := defaultSizeOf[rec]()
	if err != nil || fixed != 0 {
		t.Fatalf("fixed %d, err %v", fixed, err)
	}
	header := int(unsafe.Sizeof(rec{}))
	if got := size(rec{Key: make([]byte, 16), Value: make([]byte, 100), Topic: string(make([]byte, 28))}); got != header+144 {
		t.Errorf("SizeOf = %d, want header %d + 144", got, header)
	}
}

func BenchmarkDefaultSizeOf(b *testing.B) {
	size, _, err := defaultSizeOf[sizeRecord]()
	if err != nil {
		b.Fatal(err)
	}
	v := sizeRecord{Key: make([]byte, 16), Value: make([]byte, 100), Topic: "t"}
	b.ReportAllocs()
	for b.Loop() {
		size(v)
	}
}

package kafka

import (
	"bytes"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
)

var _ vinequeue.Codec[Record] = RecordCodec{}

// codecCases cover what a Record can carry: nil and empty keys, values and
// header values are distinct (Kafka's null key and tombstone).
func codecCases() map[string]Record {
	return map[string]Record{
		"zero":             {},
		"key and value":    {Key: []byte("user-1"), Value: []byte(`{"n":1}`)},
		"empty key":        {Key: []byte{}, Value: []byte("v")},
		"tombstone":        {Key: []byte("user-1")},
		"empty value":      {Key: []byte("k"), Value: []byte{}},
		"binary":           {Key: []byte{0, 0xff, 0x80}, Value: bytes.Repeat([]byte{0x80, 0}, 300)},
		"headers":          {Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}, {Key: "", Value: []byte{}}, {Key: "null", Value: nil}}},
		"headers no key":   {Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("x")}}},
		"large":            {Key: bytes.Repeat([]byte("k"), 200), Value: bytes.Repeat([]byte("v"), 1<<16)},
		"empty headers":    {Key: []byte("k"), Headers: []kgo.RecordHeader{}},
		"many headers":     {Headers: manyHeaders(130)},
		"unicode header k": {Headers: []kgo.RecordHeader{{Key: "clé", Value: []byte("é")}}},
	}
}

func manyHeaders(n int) []kgo.RecordHeader {
	hs := make([]kgo.RecordHeader, n)
	for i := range hs {
		hs[i] = kgo.RecordHeader{Key: string(rune('a' + i%26)), Value: []byte{byte(i)}}
	}
	return hs
}

// recordsEqual compares two records, telling nil from empty.
func recordsEqual(a, b Record) bool {
	if (a.Key == nil) != (b.Key == nil) || !bytes.Equal(a.Key, b.Key) ||
		(a.Value == nil) != (b.Value == nil) || !bytes.Equal(a.Value, b.Value) ||
		len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		ha, hb := a.Headers[i], b.Headers[i]
		if ha.Key != hb.Key || (ha.Value == nil) != (hb.Value == nil) || !bytes.Equal(ha.Value, hb.Value) {
			return false
		}
	}
	return true
}

func TestRecordCodecRoundTrip(t *testing.T) {
	var codec RecordCodec
	for name, r := range codecCases() {
		prefix := []byte("prefix")
		enc, err := codec.Append(prefix, r)
		if err != nil {
			t.Fatalf("%s: Append: %v", name, err)
		}
		if !bytes.Equal(enc[:len(prefix)], []byte("prefix")) {
			t.Fatalf("%s: Append overwrote dst", name)
		}
		src := enc[len(prefix):]
		got, err := codec.Decode(src)
		if err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		// An empty header list decodes as none: Kafka cannot tell them apart.
		want := r
		if len(want.Headers) == 0 {
			want.Headers = nil
		}
		if !recordsEqual(got, want) {
			t.Fatalf("%s: round trip gave %+v, want %+v", name, got, want)
		}
		// Decode keeps nothing of src: scribbling over it changes nothing.
		for i := range src {
			src[i] = 0xAA
		}
		if !recordsEqual(got, want) {
			t.Fatalf("%s: decoded record aliases the encoded bytes", name)
		}
		// Fields decoded from one allocation must not overwrite each
		// other when a caller appends to one.
		if got.Key != nil && got.Value != nil {
			value := append([]byte(nil), got.Value...)
			_ = append(got.Key, "overflow"...)
			if !bytes.Equal(got.Value, value) {
				t.Fatalf("%s: appending to Key overwrote Value", name)
			}
		}
	}
}

func TestRecordCodecRejectsDamage(t *testing.T) {
	var codec RecordCodec
	good, _ := codec.Append(nil, Record{Key: []byte("k"), Value: []byte("value"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("x")}}})
	for name, src := range map[string][]byte{
		"empty":          {},
		"version":        append([]byte{2}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte(nil), good...), 0),
		"only version":   {1},
		"huge key":       {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad varint":     {1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
		"huge headers":   {1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"header key cut": {1, 0, 0, 1, 5, 'a'},
	} {
		if _, err := codec.Decode(src); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("%s: Decode(%x) = %v, want ErrCorruptRecord", name, src, err)
		}
	}
}

func TestRecordCodecAllocations(t *testing.T) {
	var codec RecordCodec
	r := Record{Key: []byte("user-1234"), Value: bytes.Repeat([]byte("v"), 200)}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf, _ = codec.Append(buf[:0], r) }); n != 0 {
		t.Errorf("Append allocates %v times", n)
	}
	enc, _ := codec.Append(nil, r)
	// One copy of the bytes, shared by key and value.
	if n := testing.AllocsPerRun(100, func() { _, _ = codec.Decode(enc) }); n != 1 {
		t.Errorf("Decode allocates %v times, want 1", n)
	}
}

// FuzzRecordCodecDecode feeds Decode arbitrary bytes: it never panics, and
// whatever it accepts encodes back to bytes that decode to the same record.
func FuzzRecordCodecDecode(f *testing.F) {
	var codec RecordCodec
	for _, r := range codecCases() {
		enc, _ := codec.Append(nil, r)
		f.Add(enc)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0x80})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, src []byte) {
		r, err := codec.Decode(src)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("Decode error %v does not wrap ErrCorruptRecord", err)
			}
			return
		}
		enc, err := codec.Append(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := codec.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !recordsEqual(r, again) {
			t.Fatalf("decode(encode(%+v)) = %+v", r, again)
		}
	})
}

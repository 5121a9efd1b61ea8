package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrCorruptRecord is wrapped by RecordCodec.Decode's error for bytes that
// are not a record it encoded.
var ErrCorruptRecord = errors.New("kafka: corrupt record encoding")

// RecordCodec is the vinequeue.Codec for Record, so that a queue of Records
// can have a WAL: vinequeue.Config[kafka.Record]{Codec: kafka.RecordCodec{}}.
//
// It keeps everything a Record carries, including the difference between a
// nil and an empty key, value or header value (Kafka tells a null key or a
// tombstone's null value from an empty one). The encoding is a version byte
// (1), then the key, the value and the headers, each length-prefixed with a
// uvarint; it is stable, since WAL files written by one version are replayed
// by the next.
type RecordCodec struct{}

const recordCodecVersion = 1

// Append appends the encoding of r to dst.
func (RecordCodec) Append(dst []byte, r Record) ([]byte, error) {
	dst = append(dst, recordCodecVersion)
	dst = appendNullable(dst, r.Key)
	dst = appendNullable(dst, r.Value)
	dst = binary.AppendUvarint(dst, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendNullable(dst, h.Value)
	}
	return dst, nil
}

// appendNullable writes b as uvarint(len+1) and its bytes, or 0 for nil.
func appendNullable(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

// Decode decodes one record from exactly the bytes Append produced. The
// record's key, value and header values share one copy of src: it keeps
// nothing of src itself.
func (RecordCodec) Decode(src []byte) (Record, error) {
	if len(src) == 0 {
		return Record{}, fmt.Errorf("%w: empty", ErrCorruptRecord)
	}
	if src[0] != recordCodecVersion {
		return Record{}, fmt.Errorf("%w: version %d, want %d", ErrCorruptRecord, src[0], recordCodecVersion)
	}
	// One allocation for all the byte fields; they are sliced out of it
	// with full slice expressions, so appending to one cannot overwrite
	// the next.
	d := decoder{buf: append([]byte(nil), src[1:]...)}
	var r Record
	r.Key = d.nullable("key")
	r.Value = d.nullable("value")
	n := d.uvarint("header count")
	// Each header takes at least two bytes: a bound that keeps corrupt
	// input from asking for a huge slice.
	if d.err == nil && n > uint64(len(d.buf)-d.off)/2 {
		d.fail("header count %d exceeds the %d bytes left", n, len(d.buf)-d.off)
	}
	if d.err == nil && n > 0 {
		r.Headers = make([]kgo.RecordHeader, n)
		for i := range r.Headers {
			r.Headers[i].Key = string(d.bytes(d.uvarint("header key"), "header key"))
			r.Headers[i].Value = d.nullable("header value")
		}
	}
	if d.err == nil && d.off != len(d.buf) {
		d.fail("%d trailing bytes", len(d.buf)-d.off)
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

// decoder reads RecordCodec's fields from buf; the first error sticks and
// makes every later read return zero values.
type decoder struct {
	buf []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorruptRecord, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		d.fail("bad varint for the %s", what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes(n uint64, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)-d.off) {
		d.fail("%s of %d bytes exceeds the %d bytes left", what, n, len(d.buf)-d.off)
		return nil
	}
	end := d.off + int(n)
	b := d.buf[d.off:end:end]
	d.off = end
	return b
}

// nullable reads what appendNullable wrote.
func (d *decoder) nullable(what string) []byte {
	n := d.uvarint(what)
	if n == 0 || d.err != nil {
		return nil
	}
	return d.bytes(n-1, what)
}

// RecordSize is what a Record weighs for the queue's memory governor: the
// struct plus the bytes of its key, value and headers. Use it as
// vinequeue.Config[kafka.Record].SizeOf (the queue cannot size a Record by
// itself: its Headers slice holds memory it cannot see).
func RecordSize(r Record) int {
	n := int(unsafe.Sizeof(r)) + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += int(unsafe.Sizeof(h)) + len(h.Key) + len(h.Value)
	}
	return n
}

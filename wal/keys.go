package wal

import (
	"encoding/binary"
	"fmt"
)

// AppendKeys appends to items (a payload of frames built with AppendFrame,
// one per key, in order) the trailer that makes it a keyed record's
// payload: the keys and their count (see format.go). WriteKeyed writes
// such a payload.
func AppendKeys(items []byte, keys []uint64) []byte {
	for _, k := range keys {
		items = binary.LittleEndian.AppendUint64(items, k)
	}
	return binary.LittleEndian.AppendUint32(items, uint32(len(keys)))
}

// splitKeyed splits a keyed record's payload into its frames and its keys
// (8n bytes), checking the trailer against the frames: n frames, as many
// as keys. It never panics or allocates on bad input.
func splitKeyed(payload []byte) (items, keys []byte, n int, err error) {
	if len(payload) < keyedTrailer {
		return nil, nil, 0, fmt.Errorf("%w: keyed payload of %d bytes has no key trailer", ErrCorrupt, len(payload))
	}
	end := len(payload) - keyedTrailer
	count := uint64(binary.LittleEndian.Uint32(payload[end:]))
	if count*8 > uint64(end) {
		return nil, nil, 0, fmt.Errorf("%w: keyed payload names %d keys in %d bytes", ErrCorrupt, count, end)
	}
	m := end - int(count)*8
	items, keys = payload[:m], payload[m:end]
	frames := 0
	for off := 0; off < len(items); frames++ {
		size, k := binary.Uvarint(items[off:])
		if k <= 0 || size > uint64(len(items)-off-k) {
			return nil, nil, 0, fmt.Errorf("%w: keyed payload: item frame at offset %d", ErrCorrupt, off)
		}
		off += k + int(size)
	}
	if frames != int(count) {
		return nil, nil, 0, fmt.Errorf("%w: keyed payload has %d items and %d keys", ErrCorrupt, frames, count)
	}
	return items, keys, int(count), nil
}

// appendKeysOf appends the n keys of a keyed trailer (splitKeyed) to dst.
func appendKeysOf(dst []uint64, keys []byte) []uint64 {
	for ; len(keys) >= 8; keys = keys[8:] {
		dst = append(dst, binary.LittleEndian.Uint64(keys))
	}
	return dst
}

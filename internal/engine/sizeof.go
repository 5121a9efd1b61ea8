package engine

import (
	"fmt"
	"reflect"
	"strings"
	"time"
	"unsafe"
)

// The default SizeOf counts what an item holds: its own bytes plus the bytes
// behind its strings and []byte slices, wherever they sit in the item
// (fields of nested structs, elements of arrays). The layout is worked out
// once, in New, with reflect: the offsets of every string and []byte inside
// T. Sizing an item then reads the length words at those offsets, through
// unsafe: no reflect and no allocation per item.
//
// A type whose items may hold other memory (pointers, maps, interfaces,
// channels, funcs, slices of anything but bytes) cannot be sized this way,
// and New refuses it unless Config.SizeOf is set. time.Time is taken as
// plain bytes: its one pointer is to a shared *time.Location.

// lenKind says which header sits at a lenField.
type lenKind uint8

const (
	lenString lenKind = iota
	lenBytes
)

// lenField locates count strings or []byte slices inside an item: the first
// at off, the next ones stride bytes apart (an array's elements).
type lenField struct {
	off, stride uintptr
	count       int
	kind        lenKind
}

// maxLenFields bounds a layout: past it (arrays of structs of arrays of
// strings, say) New asks for a SizeOf rather than walk a long list per item.
const maxLenFields = 64

// itemLayout is T's layout for sizing: its own size and its length fields.
type itemLayout struct {
	base   int
	fields []lenField
}

// size is the accounted size of the item at p.
func (l *itemLayout) size(p unsafe.Pointer) int {
	n := l.base
	for i := range l.fields {
		f := &l.fields[i]
		for j := range f.count {
			a := unsafe.Add(p, f.off+uintptr(j)*f.stride)
			if f.kind == lenString {
				n += len(*(*string)(a))
			} else {
				n += len(*(*[]byte)(a))
			}
		}
	}
	return n
}

// defaultSizeOf returns the default SizeOf for T, and T's size when that is
// every item's (T holds no string or []byte), else 0. It fails for a type it
// cannot size; the error names the part of T that stops it.
func defaultSizeOf[T any]() (func(T) int, int, error) {
	t := reflect.TypeFor[T]()
	fields, err := lenFields(t, 0, "")
	if err != nil {
		return nil, 0, fmt.Errorf("cannot size %v: %w", t, err)
	}
	if len(fields) > maxLenFields {
		return nil, 0, fmt.Errorf("cannot size %v: %d strings and []byte fields, more than %d", t, len(fields), maxLenFields)
	}
	base := int(t.Size())
	if len(fields) == 0 {
		fixed := max(base, 1)
		return func(T) int { return fixed }, fixed, nil
	}
	l := &itemLayout{base: base, fields: fields}
	return func(v T) int { return l.size(unsafe.Pointer(&v)) }, 0, nil
}

var timeType = reflect.TypeFor[time.Time]()

// lenFields lists the strings and []byte slices inside a value of type t
// placed at off; path names it in errors.
func lenFields(t reflect.Type, off uintptr, path string) ([]lenField, error) {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return nil, nil
	case reflect.String:
		return []lenField{{off: off, count: 1, kind: lenString}}, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return []lenField{{off: off, count: 1, kind: lenBytes}}, nil
		}
	case reflect.Struct:
		if t == timeType {
			return nil, nil
		}
		var out []lenField
		for i := range t.NumField() {
			f := t.Field(i)
			sub, err := lenFields(f.Type, off+f.Offset, strings.TrimPrefix(path+"."+f.Name, "."))
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
			if len(out) > maxLenFields {
				return out, nil // the caller reports it
			}
		}
		return out, nil
	case reflect.Array:
		elem := t.Elem()
		sub, err := lenFields(elem, 0, path+"[i]")
		if err != nil || len(sub) == 0 || t.Len() == 0 {
			return nil, err
		}
		var out []lenField
		for _, f := range sub {
			if f.count == 1 {
				// One field per element: a single strided run.
				out = append(out, lenField{off: off + f.off, stride: elem.Size(), count: t.Len(), kind: f.kind})
				continue
			}
			for i := range t.Len() {
				f := f
				f.off += off + uintptr(i)*elem.Size()
				out = append(out, f)
				if len(out) > maxLenFields {
					return out, nil // the caller reports it
				}
			}
		}
		return out, nil
	}
	if path == "" {
		return nil, fmt.Errorf("a %v may hold memory the queue cannot see", t)
	}
	return nil, fmt.Errorf("%s is a %v, which may hold memory the queue cannot see", path, t)
}

// gzip stdin to stdout with Go's compress/gzip at the level the first argument names (-1 is
// Go's default, what BuildKit and Docker write). Built by tests/it/exact.rs and benches/producers.sh.
package main

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strconv"
)

func main() {
	level, _ := strconv.Atoi(os.Args[1])
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	w, err := gzip.NewWriterLevel(out, level)
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(w, bufio.NewReaderSize(os.Stdin, 1<<20)); err != nil {
		panic(err)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	if err := out.Flush(); err != nil {
		panic(err)
	}
}

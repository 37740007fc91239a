// Command mkclip writes the OpenAI CLIP tokenizer files (modelgen.CLIPTokenizer)
// into a folder, for scripts/tokgold/golden.mjs.
//
//	go run ./scripts/tokgold/mkclip -merges .deps/testdata/clip/bpe_simple_vocab_16e6.txt -out DIR
package main

import (
	"flag"
	"log"
	"os"

	"github.com/mlserve/mlserve/modelgen"
)

func main() {
	merges := flag.String("merges", ".deps/testdata/clip/bpe_simple_vocab_16e6.txt", "OpenAI merges file")
	out := flag.String("out", "", "output folder (created)")
	flag.Parse()
	if *out == "" {
		log.Fatal("mkclip: -out is required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	if err := (modelgen.CLIPTokenizer{Merges: *merges}).WriteDir(*out); err != nil {
		log.Fatal(err)
	}
}

package tokenizer_test

import "testing"

// BenchmarkEncodeCLIPQuery encodes a typical smart-search query as Immich
// does (special tokens, truncation and padding to 77); the word cache is
// warm after the first iteration, as in a running service.
func BenchmarkEncodeCLIPQuery(b *testing.B) {
	tok, err := loadCLIP(b).WithFixedLength(77, "<|endoftext|>")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tok.Encode("photo of my dog playing on the beach at sunset", true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeCLIPLong encodes a long paragraph (truncated at 77).
func BenchmarkEncodeCLIPLong(b *testing.B) {
	tok, err := loadCLIP(b).WithFixedLength(77, "<|endoftext|>")
	if err != nil {
		b.Fatal(err)
	}
	text := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tok.Encode(text, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadCLIP parses the 2 MB tokenizer.json.
func BenchmarkLoadCLIP(b *testing.B) {
	dir := clipDir(b)
	for b.Loop() {
		loadCLIPFrom(b, dir)
	}
}

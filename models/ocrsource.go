package models

import "fmt"

// DefaultOCRBaseURL is RapidOCR's ModelScope repository at the revision that
// rapidocr 3.8.1 (the version Immich v3.1 locks) downloads from. Relative
// paths from [OCRSource] are appended to it (or to a mirror's base URL).
const DefaultOCRBaseURL = "https://www.modelscope.cn/models/RapidAI/RapidOCR/resolve/v3.8.0"

// OCRFile is one PP-OCRv5 ONNX model in RapidOCR's model table.
type OCRFile struct {
	// Key is RapidOCR's key, e.g. "en_PP-OCRv5_rec_mobile".
	Key string
	// Path is relative to the base URL, e.g.
	// "onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx".
	Path string
	// SHA256 is the pinned digest (lower-case hex); always verified.
	SHA256 string
}

// ocrFiles is the onnxruntime/PP-OCRv5 section of rapidocr 3.8.1's
// python/rapidocr/default_models.yaml (RapidAI/RapidOCR tag v3.8.1, URLs
// under resolve/v3.8.0), limited to what Immich can ask for: detection (ch,
// mobile/server) and the recognizers of Immich's OCR names. The digests are
// the same in rapidocr 3.4 (whose file names end in "_infer.onnx").
//
// The dictionary: RapidOCR's ONNX recognizers carry it in the model's
// metadata under "character" (its onnxruntime engine reads it from there, and
// this section of the table has no dict_url, unlike the paddle/torch ones),
// so no separate dictionary file is downloaded.
var ocrFiles = map[string]OCRFile{
	"ch_PP-OCRv5_det_mobile":     {Path: "onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx", SHA256: "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae"},
	"ch_PP-OCRv5_det_server":     {Path: "onnx/PP-OCRv5/det/ch_PP-OCRv5_det_server.onnx", SHA256: "0f8846b1d4bba223a2a2f9d9b44022fbc22cc019051a602b41a7fda9667e4cad"},
	"ch_PP-OCRv5_rec_mobile":     {Path: "onnx/PP-OCRv5/rec/ch_PP-OCRv5_rec_mobile.onnx", SHA256: "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5"},
	"ch_PP-OCRv5_rec_server":     {Path: "onnx/PP-OCRv5/rec/ch_PP-OCRv5_rec_server.onnx", SHA256: "e09385400eaaaef34ceff54aeb7c4f0f1fe014c27fa8b9905d4709b65746562a"},
	"en_PP-OCRv5_rec_mobile":     {Path: "onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx", SHA256: "c3461add59bb4323ecba96a492ab75e06dda42467c9e3d0c18db5d1d21924be8"},
	"el_PP-OCRv5_rec_mobile":     {Path: "onnx/PP-OCRv5/rec/el_PP-OCRv5_rec_mobile.onnx", SHA256: "b4368bccd557123c702b7549fee6cd1e94b581337d1c9b65310f109131542b7f"},
	"eslav_PP-OCRv5_rec_mobile":  {Path: "onnx/PP-OCRv5/rec/eslav_PP-OCRv5_rec_mobile.onnx", SHA256: "08705d6721849b1347d26187f15a5e362c431963a2a62bfff4feac578c489aab"},
	"korean_PP-OCRv5_rec_mobile": {Path: "onnx/PP-OCRv5/rec/korean_PP-OCRv5_rec_mobile.onnx", SHA256: "cd6e2ea50f6943ca7271eb8c56a877a5a90720b7047fe9c41a2e541a25773c9b"},
	"latin_PP-OCRv5_rec_mobile":  {Path: "onnx/PP-OCRv5/rec/latin_PP-OCRv5_rec_mobile.onnx", SHA256: "b20bd37c168a570f583afbc8cd7925603890efbcdc000a59e22c269d160b5f5a"},
	"th_PP-OCRv5_rec_mobile":     {Path: "onnx/PP-OCRv5/rec/th_PP-OCRv5_rec_mobile.onnx", SHA256: "de541dd83161c241ff426f7ecfd602a0ba77d686cf3ab9a6c255ea82fd08006e"},
}

// OCRSource returns the file RapidOCR downloads for an OCR model and type,
// as Immich's TextDetector/TextRecognizer._download ask for it: detection is
// always the Chinese PP-OCRv5 detector in the name's size; recognition is the
// name's language in the name's size (only Chinese has a server recognizer).
func OCRSource(info Info, typ Type) (OCRFile, error) { return ocrSource(ocrFiles, info, typ) }

func ocrSource(table map[string]OCRFile, info Info, typ Type) (OCRFile, error) {
	if info.Task != TaskOCR {
		return OCRFile{}, fmt.Errorf("%w: %q is not an OCR model", ErrUnsupported, info.Name)
	}
	var key string
	switch typ {
	case TypeDetection:
		key = "ch_PP-OCRv5_det_" + info.Variant
	case TypeRecognition:
		key = info.Language + "_PP-OCRv5_rec_" + info.Variant
	default:
		return OCRFile{}, fmt.Errorf("%w: ocr/%s", ErrUnsupported, typ)
	}
	f, ok := table[key]
	if !ok {
		// RapidOCR raises "Invalid OCR configuration" here; no catalogue
		// name reaches this.
		return OCRFile{}, fmt.Errorf("%w: RapidOCR has no model %s", ErrUnknownModel, key)
	}
	f.Key = key
	return f, nil
}

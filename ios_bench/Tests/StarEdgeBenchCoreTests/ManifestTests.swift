import XCTest
@testable import StarEdgeBenchCore

/// The manifest `staredge ios-bundle` writes (TestVectors/manifest_example.json is checked
/// against the Python writer by tests/test_ios_bench.py).
final class ManifestTests: XCTestCase {
    func testReadsTheManifestPythonWrites() throws {
        let m = try BundleManifest.parse(try Paths.text("manifest_example.json"))
        XCTAssertEqual(m.models.map(\.name), ["starnet_s1", "starnet_s2"])
        XCTAssertEqual(m.rewrite, "auto")
        let s1 = m.models[0]
        XCTAssertEqual(s1.package, "starnet_s1.mlpackage")
        XCTAssertEqual(s1.inputSize, [3, 224, 224])
        XCTAssertEqual(s1.rewrites, ["fuse_batchnorm"])
        XCTAssertEqual(s1.paramsM, 2.8692)
        XCTAssertEqual(s1.validated, true)
        XCTAssertFalse(s1.isLanguageModel)
        XCTAssertNil(s1.lm)
    }

    func testLanguageModelEntries() throws {
        let text = """
        {"schema": "staredge-ios-bundle", "schema_version": 1, "models": [
          {"name": "star_lm_pydoc", "package": "star_lm_pydoc.mlpackage", "task": "text-generation",
           "lm": {"max_context": 256, "prefill_chunk": 32, "bos_id": 256, "vocab_size": 259}}]}
        """
        let m = try BundleManifest.parse(text)
        XCTAssertTrue(m.models[0].isLanguageModel)
        XCTAssertEqual(m.models[0].lm?.maxContext, 256)
        XCTAssertEqual(m.models[0].lm?.prefillChunk, 32)
        XCTAssertEqual(m.models[0].lm?.inputIdsName, "input_ids")
    }

    func testRefusesWhatItCannotRead() {
        XCTAssertThrowsError(try BundleManifest.parse("{\"schema\": \"other\"}"))
        XCTAssertThrowsError(try BundleManifest.parse("{\"schema\": \"staredge-ios-bundle\", \"schema_version\": 2, \"models\": []}")) { e in
            XCTAssertTrue(String(describing: e).contains("update the app"))
        }
        XCTAssertThrowsError(try BundleManifest.parse(
            "{\"schema\": \"staredge-ios-bundle\", \"schema_version\": 1, \"models\": [{\"name\": \"x\", \"package\": \"../x.mlpackage\"}]}"))
        XCTAssertThrowsError(try BundleManifest.parse("{\"schema\": \"staredge-ios-bundle\", \"schema_version\": 1, \"models\": [{\"name\": \"x\"}]}"))
    }

    func testReplayRecordingsAreChecked() throws {
        let r = try ReplayRecording.parse(try Paths.text("replay_example.json"))
        XCTAssertEqual(r.series.count, 3)
        XCTAssertEqual(r.machine.hardware, "iPhone14,5")
        XCTAssertThrowsError(try ReplayRecording.parse(
            "{\"schema\": \"staredge-ios-replay\", \"schema_version\": 1, \"series\": [{\"model\": \"m\", \"backend\": \"b\", \"latencies_ms\": [-1]}]}"))
    }

    func testMachineNames() {
        XCTAssertEqual(MachineInfo.deviceName(hardware: "iPhone14,5"), "iPhone 13")
        XCTAssertEqual(MachineInfo.deviceName(hardware: "x86_64"), "x86_64")
        let here = MachineInfo.current()
        XCTAssertFalse(here.os.isEmpty)
        XCTAssertFalse(here.id.isEmpty)
    }
}

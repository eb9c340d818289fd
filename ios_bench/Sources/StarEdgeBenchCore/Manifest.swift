// The bundle manifest: what `staredge ios-bundle` writes next to the CoreML packages
// (Models/manifest.json) and what the app and the Mac tool read to know what to time.

import Foundation

/// Version of this package, written into results as part of `tool`.
public enum StarEdgeBench {
    public static let version = "1.0"
    /// Schema name and version of the manifest `staredge ios-bundle` writes.
    public static let manifestSchema = "staredge-ios-bundle"
    public static let manifestSchemaVersion = 1
    /// The manifest's file name inside the models folder.
    public static let manifestFileName = "manifest.json"
}

/// Settings of a STAR language-model package (task `text-generation`), as far as the
/// manifest knows them; the CoreML runner checks them against the model description.
public struct LMSpec: Equatable, Sendable {
    public var maxContext: Int?
    public var prefillChunk: Int?
    public var bosId: Int?
    public var vocabSize: Int?
    public var inputIdsName: String = "input_ids"
    public var positionName: String = "position"
    public var logitsName: String = "logits"

    public init(maxContext: Int? = nil, prefillChunk: Int? = nil, bosId: Int? = nil, vocabSize: Int? = nil) {
        self.maxContext = maxContext
        self.prefillChunk = prefillChunk
        self.bosId = bosId
        self.vocabSize = vocabSize
    }
}

/// One CoreML package in the bundle.
public struct BundledModel: Equatable, Sendable, Identifiable {
    public var id: String { "\(name)/\(variant)/\(precision)" }
    /// Registry name, e.g. `starnet_s1`.
    public var name: String
    public var variant: String = "star"
    /// File name of the `.mlpackage` (or `.mlmodelc`) inside the models folder.
    public var package: String
    /// `image-classification` or `text-generation`.
    public var task: String = "image-classification"
    public var precision: String = "fp32"
    public var rewrites: [String] = []
    public var inputName: String = "input"
    /// (C, H, W) for image models.
    public var inputSize: [Int] = [3, 224, 224]
    public var paramsM: Double? = nil
    public var macsM: Double? = nil
    /// Whether `staredge export` validated the package against PyTorch, and how closely.
    public var validated: Bool? = nil
    public var maxAbsDiff: Double? = nil
    public var lm: LMSpec? = nil

    public init(name: String, package: String) {
        self.name = name
        self.package = package
    }

    public var isLanguageModel: Bool { task == "text-generation" }
}

/// The manifest of a models folder.
public struct BundleManifest: Equatable, Sendable {
    public var createdUTC: String = ""
    public var staredgeVersion: String = ""
    /// The rewrite setting the packages were exported with (`auto`, `none`, a pass list).
    public var rewrite: String = "auto"
    public var models: [BundledModel] = []

    public init(models: [BundledModel] = []) { self.models = models }

    /// Parse manifest JSON; errors name what is missing.
    public static func parse(_ text: String, source: String = "manifest") throws -> BundleManifest {
        let root = try JSONValue.parse(text)
        guard root["schema"]?.stringValue == StarEdgeBench.manifestSchema else {
            throw BenchError.format("\(source) is not a '\(StarEdgeBench.manifestSchema)' manifest (write it with `staredge ios-bundle`)")
        }
        guard let version = root["schema_version"]?.intValue, version >= 1 else {
            throw BenchError.format("\(source): schema_version must be a positive integer")
        }
        guard version <= StarEdgeBench.manifestSchemaVersion else {
            throw BenchError.format("\(source) uses manifest schema_version \(version); this app reads up to \(StarEdgeBench.manifestSchemaVersion): update the app")
        }
        var m = BundleManifest()
        m.createdUTC = root["created_utc"]?.stringValue ?? ""
        m.staredgeVersion = root["staredge_version"]?.stringValue ?? ""
        m.rewrite = root["rewrite"]?.stringValue ?? "auto"
        guard let items = root["models"]?.arrayValue else { throw BenchError.format("\(source) has no 'models' list") }
        for (i, item) in items.enumerated() {
            guard let name = item["name"]?.stringValue, let package = item["package"]?.stringValue else {
                throw BenchError.format("\(source): model \(i) needs 'name' and 'package'")
            }
            guard !package.contains("/") && !package.hasPrefix(".") else {
                throw BenchError.format("\(source): model \(name): 'package' must be a file name inside the models folder, got '\(package)'")
            }
            var b = BundledModel(name: name, package: package)
            b.variant = item["variant"]?.stringValue ?? "star"
            b.task = item["task"]?.stringValue ?? "image-classification"
            b.precision = item["precision"]?.stringValue ?? "fp32"
            b.rewrites = item["rewrites"]?.arrayValue?.compactMap(\.stringValue) ?? []
            b.inputName = item["input_name"]?.stringValue ?? "input"
            if let size = item["input_size"]?.arrayValue?.compactMap(\.intValue), !size.isEmpty { b.inputSize = size }
            b.paramsM = item["params_m"]?.doubleValue
            b.macsM = item["macs_m"]?.doubleValue
            b.validated = item["validated"]?.boolValue
            b.maxAbsDiff = item["max_abs_diff"]?.doubleValue
            if let lm = item["lm"], !lm.isNull {
                var spec = LMSpec(maxContext: lm["max_context"]?.intValue, prefillChunk: lm["prefill_chunk"]?.intValue,
                                  bosId: lm["bos_id"]?.intValue, vocabSize: lm["vocab_size"]?.intValue)
                spec.inputIdsName = lm["input_ids_name"]?.stringValue ?? spec.inputIdsName
                spec.positionName = lm["position_name"]?.stringValue ?? spec.positionName
                spec.logitsName = lm["logits_name"]?.stringValue ?? spec.logitsName
                b.lm = spec
            } else if b.isLanguageModel {
                b.lm = LMSpec()
            }
            m.models.append(b)
        }
        return m
    }

    /// Read `manifest.json` from a models folder.
    public static func load(folder: URL) throws -> BundleManifest {
        let url = folder.appendingPathComponent(StarEdgeBench.manifestFileName)
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw BenchError.io("cannot read \(url.path): \(error.localizedDescription). Bundle models with `staredge ios-bundle MODEL --out ios_bench/Models`")
        }
        return try parse(text, source: url.path)
    }
}

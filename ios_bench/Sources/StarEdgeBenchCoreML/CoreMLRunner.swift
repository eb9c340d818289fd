// CoreML runners: image classifiers (one fixed BGRA pixel buffer) and stateful STAR
// language models (MLState: prefill, then one token per prediction). Everything CoreML is
// behind `#if canImport(CoreML)`: on Linux this module only says that CoreML is missing.
// This file was written against Apple's documented API; it is compiled on Apple platforms
// only (see ../../README.md for what was compiled where).

import StarEdgeBenchCore

/// Whether this build can run CoreML packages.
public enum CoreMLSupport {
    #if canImport(CoreML)
    public static let isAvailable = true
    #else
    public static let isAvailable = false
    #endif
}

#if canImport(CoreML)
import CoreML
import CoreVideo
import Foundation

extension ComputeUnits {
    /// The `MLModelConfiguration.computeUnits` value of this setting.
    public var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuOnly: return .cpuOnly
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        }
    }
}

/// Runner factories for the packages of a models folder (`manifest.json` + `.mlpackage`s).
/// A `.mlpackage` is compiled once per process (`MLModel.compileModel(at:)`) into
/// `cacheFolder`; compilation is never timed. `.mlmodelc` folders are used as they are.
public final class CoreMLProvider: RunnerProvider {
    public let folder: URL
    public let cacheFolder: URL
    private var compiled: [String: URL] = [:]
    private let lock = NSLock()

    public init(folder: URL, cacheFolder: URL? = nil) {
        self.folder = folder
        // one folder per provider: two processes (or two models folders) never share a compiled model
        self.cacheFolder = (cacheFolder
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("StarEdgeBench-compiled", isDirectory: true))
            .appendingPathComponent(UUID().uuidString, isDirectory: true)
    }

    /// "CoreML, iOS 18.1" (the OS version is the CoreML version that matters).
    public var runtimeVersion: String? {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        #if os(iOS)
        return "CoreML (iOS \(v.majorVersion).\(v.minorVersion).\(v.patchVersion))"
        #else
        return "CoreML (macOS \(v.majorVersion).\(v.minorVersion).\(v.patchVersion))"
        #endif
    }

    public func factory(for model: BundledModel, units: ComputeUnits) throws -> RunnerFactory {
        CoreMLRunnerFactory(url: try compiledURL(for: model), model: model, units: units)
    }

    /// The compiled model (`.mlmodelc`) of a bundled package.
    public func compiledURL(for model: BundledModel) throws -> URL {
        let source = folder.appendingPathComponent(model.package)
        guard FileManager.default.fileExists(atPath: source.path) else {
            throw BenchError.io("\(model.package) is not in \(folder.path); bundle it with `staredge ios-bundle \(model.name) --out <models folder>`")
        }
        if source.pathExtension == "mlmodelc" { return source }
        lock.lock()
        defer { lock.unlock() }
        if let url = compiled[model.package] { return url }
        do {
            let temporary = try MLModel.compileModel(at: source)
            let fm = FileManager.default
            try fm.createDirectory(at: cacheFolder, withIntermediateDirectories: true)
            let target = cacheFolder.appendingPathComponent((model.package as NSString).deletingPathExtension + ".mlmodelc")
            if fm.fileExists(atPath: target.path) { try fm.removeItem(at: target) }
            if temporary.standardizedFileURL == source.standardizedFileURL {
                try fm.copyItem(at: temporary, to: target)  // never move the bundled package itself
            } else {
                try fm.moveItem(at: temporary, to: target)
            }
            compiled[model.package] = target
            return target
        } catch {
            throw BenchError.runner("CoreML could not compile \(model.package): \(error.localizedDescription)")
        }
    }
}

/// Loads a compiled model with one compute-units setting (once per run under ModelBench).
public struct CoreMLRunnerFactory: RunnerFactory {
    public let url: URL
    public let model: BundledModel
    public let units: ComputeUnits

    public func makeRunner() throws -> InferenceRunner {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = units.mlComputeUnits
        let loaded: MLModel
        do {
            loaded = try MLModel(contentsOf: url, configuration: configuration)
        } catch {
            throw BenchError.runner("CoreML could not load \(model.package) with \(units.rawValue): \(error.localizedDescription)")
        }
        if model.isLanguageModel {
            if #available(iOS 18.0, macOS 15.0, *) {
                return try CoreMLStatefulLMRunner(model: loaded, spec: model.lm ?? LMSpec(), name: model.name)
            }
            throw BenchError.unsupported("\(model.name) is a stateful language model: timing it needs iOS 18 or macOS 15")
        }
        return try CoreMLImageRunner(model: loaded, bundled: model)
    }
}

/// An image classifier fed one fixed 224x224 (or the model's size) 32BGRA pixel buffer,
/// batch 1; a tensor-input package gets one fixed MLMultiArray instead.
public final class CoreMLImageRunner: InferenceRunner {
    private let model: MLModel
    private let input: MLFeatureProvider
    private let options = MLPredictionOptions()
    public private(set) var notes: [String] = []

    public init(model: MLModel, bundled: BundledModel) throws {
        self.model = model
        let inputs = model.modelDescription.inputDescriptionsByName
        let height = bundled.inputSize.count == 3 ? bundled.inputSize[1] : 224
        let width = bundled.inputSize.count == 3 ? bundled.inputSize[2] : 224
        if let (name, description) = inputs.first(where: { $0.value.type == .image }) {
            let constraint = description.imageConstraint
            let w = constraint?.pixelsWide ?? width
            let h = constraint?.pixelsHigh ?? height
            let buffer = try CoreMLImageRunner.makePixelBuffer(width: w, height: h)
            input = try MLDictionaryFeatureProvider(dictionary: [name: MLFeatureValue(pixelBuffer: buffer)])
            notes.append("input \(name): \(w)x\(h) 32BGRA pixel buffer, batch 1")
        } else if let (name, description) = inputs.first(where: { $0.value.type == .multiArray }),
                  let constraint = description.multiArrayConstraint {
            let array = try MLMultiArray(shape: constraint.shape, dataType: .float32)
            for i in 0..<array.count { array[i] = NSNumber(value: Float((i % 251)) / 251.0 - 0.5) }
            input = try MLDictionaryFeatureProvider(dictionary: [name: MLFeatureValue(multiArray: array)])
            notes.append("input \(name): fixed float32 tensor \(constraint.shape)")
        } else {
            throw BenchError.runner("\(bundled.package) has no image or tensor input this app can feed")
        }
    }

    public func infer() throws {
        _ = try model.prediction(from: input, options: options)
    }

    /// An IOSurface-backed 32BGRA buffer with a fixed gradient (the same on every run).
    static func makePixelBuffer(width: Int, height: Int) throws -> CVPixelBuffer {
        var buffer: CVPixelBuffer?
        let attributes: [String: Any] = [kCVPixelBufferIOSurfacePropertiesKey as String: [String: Any]()]
        let status = CVPixelBufferCreate(kCFAllocatorDefault, width, height, kCVPixelFormatType_32BGRA,
                                         attributes as CFDictionary, &buffer)
        guard status == kCVReturnSuccess, let pixels = buffer else {
            throw BenchError.runner("could not create a \(width)x\(height) BGRA pixel buffer (CVReturn \(status))")
        }
        CVPixelBufferLockBaseAddress(pixels, [])
        defer { CVPixelBufferUnlockBaseAddress(pixels, []) }
        guard let base = CVPixelBufferGetBaseAddress(pixels) else {
            throw BenchError.runner("pixel buffer has no base address")
        }
        let rowBytes = CVPixelBufferGetBytesPerRow(pixels)
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        for y in 0..<height {
            for x in 0..<width {
                let p = bytes + y * rowBytes + x * 4
                p[0] = UInt8((x * 255) / max(width - 1, 1))          // B
                p[1] = UInt8((y * 255) / max(height - 1, 1))         // G
                p[2] = UInt8(((x + y) * 255) / max(width + height - 2, 1))  // R
                p[3] = 255                                           // A
            }
        }
        return pixels
    }
}

/// A stateful STAR language model (an iOS 18 ML Program whose KV / recurrent buffers are
/// CoreML states). One stream: `makeState()`, prefill of a fixed English prompt (in chunks
/// where the package accepts more than one token per call), then one token per
/// prediction, each the greedy choice of the previous logits. The timed inference is one
/// decode step; the prefill is timed separately and recorded with the run. When the
/// context is full, a new stream starts outside the timed interval.
@available(iOS 18.0, macOS 15.0, *)
public final class CoreMLStatefulLMRunner: InferenceRunner {
    /// ≥ 64 bytes of English, as the LM artifacts are validated with.
    public static let prompt = "The quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly."

    private let model: MLModel
    private let spec: LMSpec
    private let options = MLPredictionOptions()
    private let clock = MonotonicClock()
    private var state: MLState
    private let promptIds: [Int32]
    private let idsType: MLMultiArrayDataType
    private let positionType: MLMultiArrayDataType
    private let chunkSizes: [Int]          // token counts one call accepts, largest first
    private let maxContext: Int
    private var position = 0
    private var nextToken: Int32 = 0
    private var prefillMs: [Double] = []
    private var reported = 0
    public private(set) var notes: [String] = []

    public init(model: MLModel, spec: LMSpec, name: String) throws {
        self.model = model
        self.spec = spec
        let description = model.modelDescription
        guard !description.stateDescriptionsByName.isEmpty else {
            throw BenchError.unsupported("\(name) has no CoreML state: only stateful (iOS 18) LM packages are timed here")
        }
        guard let ids = description.inputDescriptionsByName[spec.inputIdsName]?.multiArrayConstraint else {
            throw BenchError.runner("\(name) has no multi-array input '\(spec.inputIdsName)'")
        }
        guard let pos = description.inputDescriptionsByName[spec.positionName]?.multiArrayConstraint else {
            throw BenchError.runner("\(name) has no multi-array input '\(spec.positionName)'")
        }
        idsType = ids.dataType
        positionType = pos.dataType
        // Token counts per call: enumerated shapes, a range, or the one fixed shape [1, T].
        var sizes: [Int] = []
        switch ids.shapeConstraint.type {
        case .enumerated:
            sizes = ids.shapeConstraint.enumeratedShapes.compactMap { $0.count == 2 ? $0[1].intValue : nil }
        case .range:
            let ranges = ids.shapeConstraint.sizeRangeForDimension
            if ranges.count == 2 {
                let range = ranges[1].rangeValue
                let upper = range.location + range.length
                let wanted = spec.prefillChunk ?? 64
                sizes = [min(max(wanted, range.location), upper), max(range.location, 1)]
            }
        default:
            if ids.shape.count == 2 { sizes = [ids.shape[1].intValue] }
        }
        sizes = Array(Set(sizes.filter { $0 >= 1 })).sorted(by: >)
        guard sizes.contains(1) else {
            throw BenchError.runner("\(name): '\(spec.inputIdsName)' must accept one token per call for decoding (shapes: \(sizes))")
        }
        chunkSizes = sizes
        maxContext = spec.maxContext ?? 512
        let bos = spec.bosId.map { [Int32($0)] } ?? []
        promptIds = bos + CoreMLStatefulLMRunner.prompt.utf8.map { Int32($0) }
        guard promptIds.count + 2 < maxContext else {
            throw BenchError.runner("\(name): the prompt (\(promptIds.count) tokens) does not fit the context of \(maxContext)")
        }
        state = model.makeState()
        notes.append("decode: one token per prediction with MLState; prompt \(promptIds.count) tokens prefilled in chunks of \(chunkSizes.map(String.init).joined(separator: "/")); latency = ms per decoded token")
        try startStream()
    }

    private func array(_ values: [Int32], type: MLMultiArrayDataType, shape: [Int]) throws -> MLMultiArray {
        let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: type)
        for (i, v) in values.enumerated() { a[i] = NSNumber(value: v) }
        return a
    }

    /// One prediction on `tokens` at the current position; returns the greedy next token.
    private func step(_ tokens: [Int32]) throws -> Int32 {
        let ids = try array(tokens, type: idsType, shape: [1, tokens.count])
        let pos = try array([Int32(position)], type: positionType, shape: [1])
        let features = try MLDictionaryFeatureProvider(dictionary: [
            spec.inputIdsName: MLFeatureValue(multiArray: ids),
            spec.positionName: MLFeatureValue(multiArray: pos),
        ])
        let out = try model.prediction(from: features, using: state, options: options)
        position += tokens.count
        guard let logits = out.featureValue(for: spec.logitsName)?.multiArrayValue else {
            throw BenchError.runner("the model returned no '\(spec.logitsName)' multi-array")
        }
        return CoreMLStatefulLMRunner.argmaxLast(logits)
    }

    /// Greedy choice over the last position of logits shaped [1, T, vocab] (or [T, vocab]).
    static func argmaxLast(_ logits: MLMultiArray) -> Int32 {
        let shape = logits.shape.map(\.intValue)
        let vocab = shape.last ?? 0
        let t = shape.count >= 2 ? shape[shape.count - 2] - 1 : 0
        var best = -Float.infinity
        var bestIndex = 0
        for v in 0..<vocab {
            var index = [NSNumber](repeating: 0, count: shape.count)
            index[shape.count - 1] = NSNumber(value: v)
            if shape.count >= 2 { index[shape.count - 2] = NSNumber(value: t) }
            let x = logits[index].floatValue
            if x > best { best = x; bestIndex = v }
        }
        return Int32(bestIndex)
    }

    /// A new state and the prompt prefilled (timed on its own, recorded as `prefill_ms`).
    private func startStream() throws {
        state = model.makeState()
        position = 0
        let t0 = clock.now()
        var i = 0
        var token: Int32 = 0
        while i < promptIds.count {
            let remaining = promptIds.count - i
            let n = chunkSizes.first { $0 <= remaining } ?? 1
            token = try step(Array(promptIds[i..<(i + n)]))
            i += n
        }
        prefillMs.append(Double(clock.now() &- t0) / 1e6)
        nextToken = token
    }

    public func prepareNext() throws {
        if position + 1 >= maxContext { try startStream() }
    }

    public func infer() throws {
        nextToken = try step([nextToken])
    }

    /// Prefill figures of the streams started since the previous run (the latest stream's
    /// when none was started during this run).
    public func runExtras() -> [(String, JSONValue)] {
        let fresh = Array(prefillMs[min(reported, prefillMs.count)...])
        reported = prefillMs.count
        let values = fresh.isEmpty ? Array(prefillMs.suffix(1)) : fresh
        let ms = values.isEmpty ? 0 : Statistics.fsum(values) / Double(values.count)
        return [
            ("prefill_ms", .double(Statistics.nanosecondRounded(ms))),
            ("prefill_tokens", .int(promptIds.count)),
            ("prefill_tokens_per_s", ms > 0 ? .double(Statistics.roundDecimal(Double(promptIds.count) * 1000 / ms, 2)) : .null),
            ("streams", .int(fresh.count)),
        ]
    }
}
#endif

/// Every error this package throws on purpose, with a message that says what to do.
public enum BenchError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Bad numbers or settings (empty timings, a trim that drops everything, ...).
    case invalidInput(String)
    /// A protocol setting out of range.
    case invalidProtocol(String)
    /// A file is not what it should be (JSON, manifest, replay recording).
    case format(String)
    /// A file could not be read or written.
    case io(String)
    /// A runner could not load or run a model.
    case runner(String)
    /// The platform cannot do this (e.g. CoreML off Apple platforms).
    case unsupported(String)

    public var description: String {
        switch self {
        case let .invalidInput(m), let .invalidProtocol(m), let .format(m), let .io(m), let .runner(m), let .unsupported(m):
            return m
        }
    }
}

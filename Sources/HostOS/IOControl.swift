import CLinux

// ioctl(2) through the C shim (Swift cannot call the variadic libc ioctl).
//
// ioctl is NOT retried on EINTR: KVM_RUN, for one, returns EINTR to report a signal, and the
// caller must see it. The `request` is included in the error's context.

/// ioctl with a pointer argument. Returns the call's non-negative result.
@discardableResult
public func ioctl(_ fd: borrowing FileDescriptor, _ request: UInt,
                  _ argument: UnsafeMutableRawPointer?) throws(SystemError) -> Int32 {
    let raw = fd.rawValue
    return try valueOrError("ioctl", requestContext(raw, request), retryOnInterrupt: false) {
        sy_ioctl_ptr(raw, request, argument)
    }
}

/// ioctl with an integer argument (or none: 0).
@discardableResult
public func ioctl(_ fd: borrowing FileDescriptor, _ request: UInt,
                  _ argument: UInt = 0) throws(SystemError) -> Int32 {
    let raw = fd.rawValue
    return try valueOrError("ioctl", requestContext(raw, request), retryOnInterrupt: false) {
        sy_ioctl_int(raw, request, argument)
    }
}

/// ioctl with a pointer to `value`, which the kernel may read and update in place.
@discardableResult
public func ioctl<T>(_ fd: borrowing FileDescriptor, _ request: UInt,
                     _ value: inout T) throws(SystemError) -> Int32 {
    let raw = fd.rawValue
    return try withUnsafeMutableBytes(of: &value) { (p) throws(SystemError) -> Int32 in
        try valueOrError("ioctl", requestContext(raw, request), retryOnInterrupt: false) {
            sy_ioctl_ptr(raw, request, p.baseAddress)
        }
    }
}

private func requestContext(_ fd: Int32, _ request: UInt) -> String {
    "fd \(fd), request 0x" + String(request, radix: 16)
}

import Glibc
import HostNetwork
import Testing

struct OwnedLinkNameTests {
    /// IFNAMSIZ (16, with the NUL) from <net/if.h>: the kernel refuses longer names.
    @Test func theLongestNameFitsIFNAMSIZ() throws {
        // pid_max is at most 2^22 (PID_MAX_LIMIT in <linux/threads.h>).
        let longest = try #require(OwnedLinkName(ownerProcess: 4_194_304, serial: 99_999))
        #expect(longest.description == "sy4194304-99999")
        #expect(longest.description.utf8.count < Int(IFNAMSIZ))
        #expect(OwnedLinkName(ownerProcess: 4_194_304, serial: 100_000) == nil)
    }

    @Test func namesParseBackOnlyWhenTheyAreOurs() {
        #expect(OwnedLinkName(parsing: "sy812-0") == OwnedLinkName(ownerProcess: 812, serial: 0))
        for other in ["sy-other", "sy812", "sy812-", "sy-1-2", "syx-1", "sy0812-1", "eth0", "sy812-1-2", "sy+812-1"] {
            #expect(OwnedLinkName(parsing: other) == nil, "\(other)")
        }
        let fresh = OwnedLinkName.next()
        #expect(fresh.ownerProcess == getpid())
        #expect(OwnedLinkName(parsing: fresh.description) == fresh)
        #expect(OwnedLinkName.next() != fresh)
    }
}

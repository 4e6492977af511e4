/*
 * COM1 output for the real-mode probes (.include "serial-hex.S" at the end of a probe; assemble
 * with -I Firmware/common). put_hex16/put_hex8 print ax/al in lowercase hex through put_char.
 */

/* put_hex16: prints ax as four hex digits. Clobbers ax, cx, dx. */
put_hex16:
        push    ax
        mov     al, ah
        call    put_hex8
        pop     ax
        /* fall through */

/* put_hex8: prints al as two hex digits. Clobbers ax, cx, dx. */
put_hex8:
        push    ax
        shr     al, 4
        call    put_nibble
        pop     ax
        /* fall through */

/* put_nibble: prints the low four bits of al as a lowercase hex digit. */
put_nibble:
        and     al, 0x0f
        add     al, 0x30                /* '0' */
        cmp     al, 0x39                /* '9' */
        jbe     put_char
        add     al, 0x27                /* 'a' - '0' - 10 */
        /* fall through */

/*
 * put_char: writes al to COM1's transmit holding register (0x3F8) once the line status
 * register (0x3FD) reports it empty (bit 5), giving up the wait after 65535 polls so a
 * missing UART cannot hang the probe. Clobbers cx, dx.
 */
put_char:
        push    ax
        mov     dx, 0x3fd
        mov     cx, 0xffff
wait_thre:
        in      al, dx
        test    al, 0x20
        jnz     ready
        loop    wait_thre
ready:
        pop     ax
        mov     dx, 0x3f8
        out     dx, al
        ret

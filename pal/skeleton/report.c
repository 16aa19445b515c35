/*
 * Local reports of the simulated TEE, made by the skeleton (PAL version 3).
 *
 * rune launches the enclave (it checks the signature and the measurement) and hands the PAL
 * a launch record through pal_init's fd:
 *
 *   0     4096  SECS of the enclave (SGX layout)
 *   4096  16    "INCLAVARE-LNCH-1"
 *   4112  16    CPUSVN
 *   4128  32    KEYID of this boot's reports
 *   4160  32    report root key of this boot
 *
 * A report is SGX's sgx_report_t: a 384-byte body describing the enclave, the KEYID, and an
 * AES-128-CMAC over the body with the target's report key:
 *
 *   key = HKDF-SHA256(root, salt = KEYID, info = "inclavare-sim report key" ||
 *                     target MRENCLAVE || target ATTRIBUTES || target MISCSELECT)[0:16]
 *
 * The same derivation and layout as inclavare/tee/sim (keys.py, sgx.py), so that rune can
 * check these reports. The target info is the 512-byte sgx_target_info_t; a caller may
 * append 64 bytes of report data to it (target_info_len 576), which the report then carries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "skeleton.h"

#define SECS_SIZE 4096
#define REPORT_BODY_SIZE 384

static const char record_magic[16] = "INCLAVARE-LNCH-1";
static const char report_key_label[] = "inclavare-sim report key";

static struct {
	int present;
	uint8_t secs[SECS_SIZE];
	uint8_t cpu_svn[16];
	uint8_t key_id[32];
	uint8_t root[32];
} launched;

int sim_load_launch_record(int fd)
{
	uint8_t record[SIM_LAUNCH_RECORD_SIZE];
	ssize_t got = pread(fd, record, sizeof(record), 0);

	if (got != (ssize_t)sizeof(record) ||
	    memcmp(record + SECS_SIZE, record_magic, sizeof(record_magic)) != 0) {
		fprintf(stderr, "skeleton: fd %d does not hold an enclave launch record\n", fd);
		explicit_bzero(record, sizeof(record));
		return -EINVAL;
	}
	memcpy(launched.secs, record, SECS_SIZE);
	memcpy(launched.cpu_svn, record + 4112, 16);
	memcpy(launched.key_id, record + 4128, 32);
	memcpy(launched.root, record + 4160, 32);
	launched.present = 1;
	explicit_bzero(record, sizeof(record));
	skeleton_log("enclave launched by rune; local reports available");
	return 0;
}

void sim_forget_launch_record(void)
{
	explicit_bzero(&launched, sizeof(launched));
}

static int report_key(const uint8_t *target_info, uint8_t key[16])
{
	uint8_t info[sizeof(report_key_label) - 1 + 32 + 16 + 4];
	size_t label = sizeof(report_key_label) - 1;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *context = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5];
	int ok = 0;

	memcpy(info, report_key_label, label);
	memcpy(info + label, target_info, 32);           /* MRENCLAVE */
	memcpy(info + label + 32, target_info + 32, 16); /* ATTRIBUTES */
	memcpy(info + label + 48, target_info + 52, 4);  /* MISCSELECT */
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, launched.root, 32);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, launched.key_id, 32);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof(info));
	params[4] = OSSL_PARAM_construct_end();
	if (context && EVP_KDF_derive(context, key, 16, params) == 1)
		ok = 1;
	EVP_KDF_CTX_free(context);
	EVP_KDF_free(kdf);
	return ok ? 0 : -EIO;
}

static int cmac_aes128(const uint8_t key[16], const uint8_t *message, size_t size,
		       uint8_t mac[16])
{
	EVP_MAC *algorithm = EVP_MAC_fetch(NULL, "CMAC", NULL);
	EVP_MAC_CTX *context = algorithm ? EVP_MAC_CTX_new(algorithm) : NULL;
	OSSL_PARAM params[2];
	size_t written = 0;
	int ok = 0;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, "AES-128-CBC", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (context && EVP_MAC_init(context, key, 16, params) == 1 &&
	    EVP_MAC_update(context, message, size) == 1 &&
	    EVP_MAC_final(context, mac, &written, 16) == 1 && written == 16)
		ok = 1;
	EVP_MAC_CTX_free(context);
	EVP_MAC_free(algorithm);
	return ok ? 0 : -EIO;
}

int sim_local_report(const void *target_info, int target_info_len, void *report,
		     int *report_len)
{
	const uint8_t *target = target_info;
	uint8_t body[REPORT_BODY_SIZE] = { 0 };
	uint8_t key[16], mac[16];
	uint8_t *out = report;
	int ret;

	if (!launched.present) {
		fprintf(stderr, "skeleton: no enclave was launched for this PAL (pal_init got no "
			"launch record): no local report\n");
		return -ENODATA;
	}
	if (!target || (target_info_len != SGX_TARGET_INFO_SIZE &&
			target_info_len != SGX_TARGET_INFO_SIZE + SGX_REPORT_DATA_SIZE))
		return -EINVAL;
	if (!report || !report_len || *report_len < SGX_REPORT_SIZE)
		return -EINVAL;

	/* The body: the platform's CPUSVN, then the enclave's identity from its SECS. */
	memcpy(body + 0, launched.cpu_svn, 16);
	memcpy(body + 16, launched.secs + 20, 4);    /* MISCSELECT */
	memcpy(body + 48, launched.secs + 48, 16);   /* ATTRIBUTES */
	memcpy(body + 64, launched.secs + 64, 32);   /* MRENCLAVE */
	memcpy(body + 128, launched.secs + 128, 32); /* MRSIGNER */
	memcpy(body + 192, launched.secs + 192, 64); /* CONFIGID */
	memcpy(body + 256, launched.secs + 256, 6);  /* ISVPRODID, ISVSVN, CONFIGSVN */
	if (target_info_len > SGX_TARGET_INFO_SIZE)
		memcpy(body + 320, target + SGX_TARGET_INFO_SIZE, SGX_REPORT_DATA_SIZE);

	ret = report_key(target, key);
	if (ret == 0)
		ret = cmac_aes128(key, body, sizeof(body), mac);
	explicit_bzero(key, sizeof(key));
	if (ret) {
		fprintf(stderr, "skeleton: OpenSSL could not compute the report MAC\n");
		return ret;
	}
	memcpy(out, body, REPORT_BODY_SIZE);
	memcpy(out + REPORT_BODY_SIZE, launched.key_id, 32);
	memcpy(out + REPORT_BODY_SIZE + 32, mac, 16);
	*report_len = SGX_REPORT_SIZE;
	skeleton_log("local report made for target %02x%02x%02x%02x...", target[0], target[1],
		     target[2], target[3]);
	return 0;
}

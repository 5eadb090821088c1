-- Q.850 hangup causes, for analysts to name the q850_cause of a CDR (docs/analytics.md, "Failed
-- calls by hangup cause"): every cause a PBX may report, its text, and the SIP response RFC 3398
-- maps it to (NULL when there is none, e.g. 16 normal call clearing). callback_hangup is 1 for the
-- seed's 15 causes a Callback Dial Plan may drop the initiation call with.
--
-- The rows are schemas/hangup_causes.py's Q850_CAUSES, the project's one list of causes;
-- tests/unit/test_hangup_causes_table.py fails when the two differ. A change to that list goes in a
-- new migration that refills this table (this file must not change once applied).
--
-- The table is dropped first so that a run that failed halfway can start again from the top.
-- INSERT ... SELECT from an array, because an INSERT with inline VALUES hangs on ClickHouse 18.16
-- through the native driver (infra/migrate.py).
DROP TABLE IF EXISTS callback.hangup_causes;

CREATE TABLE callback.hangup_causes
(
    q850_cause      UInt16,
    q850_text       String,
    sip_code        Nullable(UInt16),
    sip_text        String,
    callback_hangup UInt8
)
ENGINE = MergeTree
ORDER BY q850_cause;

INSERT INTO callback.hangup_causes (q850_cause, q850_text, sip_code, sip_text, callback_hangup)
SELECT c.1, c.2, c.3, c.4, c.5
FROM
(
    SELECT arrayJoin([
        (0, 'not defined (no cause given)', NULL, '', 0),
        (1, 'unallocated number', 404, 'Not Found', 1),
        (2, 'no route to network', 404, 'Not Found', 1),
        (3, 'no route to destination', 404, 'Not Found', 1),
        (4, 'send special information tone', NULL, '', 0),
        (5, 'misdialled trunk prefix', NULL, '', 0),
        (6, 'channel unacceptable', NULL, '', 0),
        (7, 'call awarded and being delivered in an established channel', NULL, '', 0),
        (8, 'preemption', NULL, '', 0),
        (9, 'preemption, circuit reserved for reuse', NULL, '', 0),
        (14, 'ported number', NULL, '', 0),
        (16, 'normal call clearing', NULL, '', 0),
        (17, 'user busy', 486, 'Busy here', 1),
        (18, 'no user responding', 408, 'Request Timeout', 1),
        (19, 'no answer from the user', 480, 'Temporarily unavailable', 1),
        (20, 'subscriber absent', 480, 'Temporarily unavailable', 1),
        (21, 'call rejected', 403, 'Forbidden', 1),
        (22, 'number changed (w/ diagnostic)', 301, 'Moved Permanently', 1),
        (23, 'redirection to new destination', 410, 'Gone', 1),
        (24, 'call rejected due to a feature at the destination', NULL, '', 0),
        (25, 'exchange routing error', NULL, '', 0),
        (26, 'non-selected user clearing', 404, 'Not Found', 1),
        (27, 'destination out of order', 502, 'Bad Gateway', 1),
        (28, 'address incomplete', 484, 'Address incomplete', 1),
        (29, 'facility rejected', 501, 'Not implemented', 1),
        (30, 'response to status enquiry', NULL, '', 0),
        (31, 'normal unspecified', 480, 'Temporarily unavailable', 1),
        (34, 'no circuit available', 503, 'Service unavailable', 0),
        (38, 'network out of order', 503, 'Service unavailable', 0),
        (39, 'permanent frame mode connection out of service', NULL, '', 0),
        (40, 'permanent frame mode connection operational', NULL, '', 0),
        (41, 'temporary failure', 503, 'Service unavailable', 0),
        (42, 'switching equipment congestion', 503, 'Service unavailable', 0),
        (43, 'access information discarded', NULL, '', 0),
        (44, 'requested circuit or channel not available', 503, 'Service unavailable', 0),
        (46, 'precedence call blocked', NULL, '', 0),
        (47, 'resource unavailable', 503, 'Service unavailable', 0),
        (49, 'quality of service not available', NULL, '', 0),
        (50, 'requested facility not subscribed', NULL, '', 0),
        (53, 'outgoing calls barred within CUG', NULL, '', 0),
        (55, 'incoming calls barred within CUG', 403, 'Forbidden', 0),
        (57, 'bearer capability not authorized', 403, 'Forbidden', 0),
        (58, 'bearer capability not presently available', 503, 'Service unavailable', 0),
        (62, 'inconsistency in outgoing access information and subscriber class', NULL, '', 0),
        (63, 'service or option not available', NULL, '', 0),
        (65, 'bearer capability not implemented', 488, 'Not Acceptable Here', 0),
        (66, 'channel type not implemented', NULL, '', 0),
        (69, 'requested facility not implemented', 501, 'Not implemented', 0),
        (70, 'only restricted digital bearer capability available', 488, 'Not Acceptable Here', 0),
        (79, 'service or option not implemented', 501, 'Not implemented', 0),
        (81, 'invalid call reference value', NULL, '', 0),
        (82, 'identified channel does not exist', NULL, '', 0),
        (83, 'a suspended call exists, but not this call identity', NULL, '', 0),
        (84, 'call identity in use', NULL, '', 0),
        (85, 'no call suspended', NULL, '', 0),
        (86, 'call with the requested call identity has been cleared', NULL, '', 0),
        (87, 'user not member of CUG', 403, 'Forbidden', 0),
        (88, 'incompatible destination', 503, 'Service unavailable', 0),
        (90, 'non-existent CUG', NULL, '', 0),
        (91, 'invalid transit network selection', NULL, '', 0),
        (95, 'invalid message', NULL, '', 0),
        (96, 'mandatory information element missing', NULL, '', 0),
        (97, 'message type non-existent or not implemented', NULL, '', 0),
        (98, 'message not compatible with call state, or message type not implemented', NULL, '', 0),
        (99, 'information element or parameter non-existent or not implemented', NULL, '', 0),
        (100, 'invalid information element contents', NULL, '', 0),
        (101, 'message not compatible with call state', NULL, '', 0),
        (102, 'recovery on timer expiry', 504, 'Gateway timeout', 0),
        (103, 'parameter non-existent or not implemented, passed on', NULL, '', 0),
        (110, 'message with unrecognized parameter discarded', NULL, '', 0),
        (111, 'protocol error', 500, 'Server internal error', 0),
        (127, 'interworking unspecified', 500, 'Server internal error', 0)
    ]) AS c
);

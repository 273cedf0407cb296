<?php
// NATS extended sales: GET or POST, so it reads $_REQUEST.
require __DIR__ . '/../_store.php';

header('Content-Type: text/plain');
$extended_id = isset($_REQUEST['extended_id']) ? $_REQUEST['extended_id'] : '';
$action = isset($_REQUEST['action']) ? strtoupper($_REQUEST['action']) : '';
if ($extended_id === '') {
    echo "ERROR\nMISSING EXTENDED_ID\n";
    exit;
}
if ($action === '') {
    $action = 'SALE';
}
if (!in_array($action, array('SALE', 'CREDIT', 'CHARGEBACK', 'VOID'), true)) {
    echo "ERROR\nUNKNOWN ACTION\n";
    exit;
}
if ($action !== 'SALE' && empty($_REQUEST['transid'])) {
    echo "ERROR\nMISSING TRANSID\n";
    exit;
}
legacy_record('process_extended', array(
    'method'      => $_SERVER['REQUEST_METHOD'],
    'extended_id' => $extended_id,
    'action'      => $action,
    'transid'     => isset($_REQUEST['transid']) ? $_REQUEST['transid'] : '',
    'amount'      => isset($_REQUEST['amount']) ? $_REQUEST['amount'] : '',
));
echo "OK\n" . $action . "\n";
